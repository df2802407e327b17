"""The built-in provider simulator (an OpenAI-compatible server on 127.0.0.1)."""

from aita.simulator.server import ProviderSimulator, SimulatorConfig, SimulatorStats

__all__ = ["ProviderSimulator", "SimulatorConfig", "SimulatorStats"]
