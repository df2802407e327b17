"""Generic workflows: ordered parallel map, course generation, YAML pipelines."""
