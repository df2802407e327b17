"""Teaching-assistant pipelines: answer keys and rubrics, transcription, grading."""
