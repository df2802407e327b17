"""aita: run large batches of LLM calls in parallel, fast and safely.

The engine's public names (``aita.engine.__all__``) are all importable from here too, with the
settings, the provider simulator and ``parallel_map_with_delay``.
"""

from importlib.metadata import PackageNotFoundError, version

from aita.config import AitaConfig, ParallelExecutionConfig, get_config, load_config
from aita.engine import *  # noqa: F403
from aita.engine import __all__ as _engine_names
from aita.simulator import ProviderSimulator, SimulatorConfig
from aita.workflows.parallel_map import parallel_map_with_delay

try:
    __version__ = version("aita")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    *_engine_names,
    "AitaConfig",
    "ParallelExecutionConfig",
    "ProviderSimulator",
    "SimulatorConfig",
    "get_config",
    "load_config",
    "parallel_map_with_delay",
]
