"""Settings come from AITA_* variables and .env; a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from aita.config import get_config, load_config
from aita.errors import ConfigError


def test_defaults_match_the_spec() -> None:
    config = get_config()
    pe = config.parallel_execution
    assert (pe.max_workers, pe.rate_limit_rps, pe.checkpoint_interval) == (5, 10.0, 10)
    assert pe.enable_checkpointing is True
    assert config.llm.model == "google/gemini-2.5-flash"
    assert config.llm.base_url == "https://openrouter.ai/api/v1"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITA_MAX_WORKERS", "12")
    monkeypatch.setenv("AITA_RATE_LIMIT_RPS", "15.5")
    monkeypatch.setenv("AITA_SHOW_PROGRESS", "false")
    monkeypatch.setenv("AITA_MAX_RETRIES", "7")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-env")
    config = load_config()
    assert config.parallel_execution.max_workers == 12
    assert config.parallel_execution.rate_limit_rps == 15.5
    assert config.parallel_execution.show_progress is False
    assert config.parallel_execution.max_retries == 7
    assert config.llm.api_key is not None and config.llm.api_key.get_secret_value() == "sk-env"


def test_dotenv_file_is_read(isolated_env: Path) -> None:
    (isolated_env / ".env").write_text("AITA_MAX_WORKERS=3\nAITA_MODEL=openai/gpt-4o-mini\n")
    config = load_config()
    assert config.parallel_execution.max_workers == 3
    assert config.llm.model == "openai/gpt-4o-mini"


def test_rate_limit_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITA_RATE_LIMIT_RPS", "none")
    assert load_config().parallel_execution.rate_limit_rps is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AITA_MAX_WORKERS", "many"),
        ("AITA_MAX_WORKERS", "0"),
        ("AITA_RATE_LIMIT_RPS", "-1"),
        ("AITA_CHECKPOINT_INTERVAL", "0"),
        ("AITA_ENABLE_CHECKPOINTING", "perhaps"),
        ("AITA_SHOW_PROGRESS", "2"),
        ("AITA_MAX_RETRIES", "-3"),
        ("AITA_REQUEST_TIMEOUT", "0"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as caught:
        load_config()
    assert "\n" not in str(caught.value)


def test_settings_repr_hides_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-sentinel-123456")
    config = load_config()
    assert "sk-sentinel-123456" not in repr(config)
    assert "sk-sentinel-123456" not in str(config)


def test_shared_limit_and_cache_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AITA_REDIS_URL", "redis://:pw-not-real@redis.internal:6379/0")
    monkeypatch.setenv("AITA_RATE_LIMIT_NAME", "team-key")
    monkeypatch.setenv("AITA_CACHE", "true")
    monkeypatch.setenv("AITA_CACHE_PATH", "~/somewhere/cache.sqlite3")
    pe = load_config().parallel_execution
    assert pe.redis_url is not None
    assert pe.redis_url.get_secret_value() == "redis://:pw-not-real@redis.internal:6379/0"
    assert "pw-not-real" not in repr(pe)
    assert pe.rate_limit_name == "team-key" and pe.cache is True
    assert pe.cache_path == Path("~/somewhere/cache.sqlite3").expanduser()


def test_shared_limit_and_cache_are_off_by_default() -> None:
    pe = load_config().parallel_execution
    assert (pe.redis_url, pe.rate_limit_name, pe.cache) == (None, None, False)
    assert pe.cache_path == Path("~/.cache/aita/responses.sqlite3").expanduser()


def test_a_bad_cache_switch_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITA_CACHE", "sometimes")
    with pytest.raises(ConfigError, match=r"^AITA_CACHE: "):
        load_config()


def test_a_checkpoint_folder_to_be_made_is_tried_and_nothing_left_behind(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("AITA_CHECKPOINT_DIR", "runs/checkpoints")
    assert load_config().parallel_execution.checkpoint_dir == Path("runs/checkpoints")
    assert list(isolated_env.iterdir()) == []  # made when the first checkpoint is written
    (isolated_env / "runs").write_text("")
    with pytest.raises(ConfigError, match=r"^AITA_CHECKPOINT_DIR: runs/checkpoints cannot be"):
        load_config()
