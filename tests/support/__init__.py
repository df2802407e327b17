"""Shared test doubles and the real servers the tests start (Redis, llama.cpp)."""
