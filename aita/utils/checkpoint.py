"""Re-exports the checkpoint journal from ``aita.engine``, for code written against the guide."""

from aita.engine import Checkpoint, CheckpointJournal, CheckpointManager, TaskRecord

__all__ = ["Checkpoint", "CheckpointJournal", "CheckpointManager", "TaskRecord"]
