"""Settings: one typed object read from ``AITA_*`` variables and ``.env``.

Nothing else in aita reads ``os.environ``. An invalid value is rejected here, with the name of the
variable, so a typo in ``.env`` fails at start-up instead of deep inside a batch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aita.errors import ConfigError, validation_problem

DEFAULT_MODEL = "google/gemini-2.5-flash"
DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
#: Where the response cache lives unless ``AITA_CACHE_PATH`` says otherwise (one per user).
DEFAULT_CACHE_PATH = Path("~/.cache/aita/responses.sqlite3")
#: A provider's answer (the whole HTTP body) larger than this is refused: a completion of a
#: million tokens is about 4 MB, so only a broken or hostile server sends more.
DEFAULT_MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: The ``.env`` file pydantic-settings reads (from the working directory).
DOTENV_FILE = Path(".env")


class Settings(BaseSettings):
    """Flat, as in the environment; ``AitaConfig`` groups it for code."""

    model_config = SettingsConfigDict(
        env_prefix="AITA_",
        env_file=DOTENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENROUTER_API_KEY", "AITA_API_KEY")
    )
    model: str = DEFAULT_MODEL
    base_url: str = DEFAULT_BASE_URL
    request_timeout: float = Field(default=120.0, gt=0)
    max_answer_bytes: int = Field(default=DEFAULT_MAX_ANSWER_BYTES, ge=1024)
    #: read assignment files, student folders and results that lead outside their folder
    allow_outside_paths: bool = False
    max_workers: int = Field(default=5, ge=1, le=100_000)  # calls in flight
    rate_limit_rps: float | None = Field(default=10.0, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    enable_checkpointing: bool = True
    checkpoint_interval: int = Field(default=10, ge=1)
    checkpoint_dir: Path = Path("checkpoints")
    show_progress: bool = True
    max_retries: int = Field(default=3, ge=0, le=100)
    outage_budget: float = Field(default=300.0, gt=0)
    data_dir: Path = Path("data")
    max_tokens: int | None = Field(default=None, ge=1)
    spend_ledger: Path | None = Path("~/.aita/spend.jsonl")
    dry_run_latency: float = Field(default=0.05, ge=0, le=60)
    #: ``redis://[:password@]host:6379/0``: share the rate limit with every process naming it
    redis_url: SecretStr | None = None
    #: the shared limit's name (default: the provider's base URL and the model)
    rate_limit_name: str | None = None
    cache: bool = False
    cache_path: Path = Field(default=DEFAULT_CACHE_PATH, validate_default=True)
    pipeline_parallel_enabled: bool | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIPELINE_PARALLEL_ENABLED", "AITA_PIPELINE_PARALLEL_ENABLED"
        ),
    )

    @field_validator(
        "rate_limit_rps", "tokens_per_minute", "spend_ledger", "max_tokens", mode="before"
    )
    @classmethod
    def _unlimited_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "off", "unlimited"}:
            return None
        return value

    @field_validator("redis_url", "rate_limit_name", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cache_path")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()


@dataclass(frozen=True)
class ParallelExecutionConfig:
    max_workers: int = 5
    rate_limit_rps: float | None = 10.0
    tokens_per_minute: float | None = None
    enable_checkpointing: bool = True
    checkpoint_interval: int = 10
    checkpoint_dir: Path = Path("checkpoints")
    show_progress: bool = True
    max_retries: int = 3
    #: one line per paid call, kept apart from checkpoints (None: not kept)
    spend_ledger: Path | None = Path("~/.aita/spend.jsonl")
    #: seconds the provider may stay unreachable before a batch stops
    outage_budget: float = 300.0
    #: share the rate limit, token budget and 429 pauses through this Redis (None: this process)
    redis_url: SecretStr | None = None
    rate_limit_name: str | None = None
    #: answer requests asked before from the response cache at ``cache_path``
    cache: bool = False
    cache_path: Path = DEFAULT_CACHE_PATH


@dataclass(frozen=True)
class LLMConfig:
    api_key: SecretStr | None
    model: str = DEFAULT_MODEL
    base_url: str = DEFAULT_BASE_URL
    request_timeout: float = 120.0
    #: an answer (HTTP body) above this many bytes is refused (``AITA_MAX_ANSWER_BYTES``)
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    #: the ``.env`` file ``base_url`` came from, when it came from one and not from the
    #: environment or the default: a cloned folder's ``.env`` could send the key elsewhere
    base_url_from: Path | None = None


@dataclass(frozen=True)
class AitaConfig:
    llm: LLMConfig
    parallel_execution: ParallelExecutionConfig
    data_dir: Path
    #: seconds per simulated call in ``--dry-run`` (slow it down to watch the progress bars)
    dry_run_latency: float = 0.05
    #: a cap on each answer of the teaching-assistant tasks, in tokens (None: the model's own)
    max_tokens: int | None = None
    #: ``PIPELINE_PARALLEL_ENABLED``: run YAML pipeline groups in parallel (None: as the file says)
    pipeline_parallel_enabled: bool | None = None
    #: ``AITA_ALLOW_OUTSIDE_PATHS``: follow links out of an assignment's folder (off: refused)
    allow_outside_paths: bool = False


#: Settings whose rejected value is never echoed (a Redis URL may hold a password).
SECRET_FIELDS = frozenset({"api_key", "redis_url"})


def _variable_name(field_name: str) -> str:
    if field_name == "api_key":
        return "OPENROUTER_API_KEY"
    if field_name == "pipeline_parallel_enabled":
        return "PIPELINE_PARALLEL_ENABLED"
    return f"AITA_{field_name.upper()}"


def load_config(**overrides: Any) -> AitaConfig:
    """Read settings now (environment, then ``.env``); ``overrides`` win over both."""
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        loc = error.errors()[0]["loc"]
        field_name = str(loc[0]) if loc else "?"
        # Never echo the rejected value of a secret; other values help the user.
        _, problem = validation_problem(error, show_input=field_name not in SECRET_FIELDS)
        raise ConfigError(f"{_variable_name(field_name)}: {problem}") from None
    unusable = _folder_problem(settings.checkpoint_dir)
    if unusable:
        raise ConfigError(f"AITA_CHECKPOINT_DIR: {unusable}")
    return AitaConfig(
        llm=LLMConfig(
            api_key=settings.api_key,
            model=settings.model,
            base_url=settings.base_url,
            request_timeout=settings.request_timeout,
            max_answer_bytes=settings.max_answer_bytes,
            base_url_from=None if "base_url" in overrides else _from_dotenv(settings.base_url),
        ),
        parallel_execution=ParallelExecutionConfig(
            max_workers=settings.max_workers,
            rate_limit_rps=settings.rate_limit_rps,
            tokens_per_minute=settings.tokens_per_minute,
            enable_checkpointing=settings.enable_checkpointing,
            checkpoint_interval=settings.checkpoint_interval,
            checkpoint_dir=settings.checkpoint_dir,
            show_progress=settings.show_progress,
            max_retries=settings.max_retries,
            spend_ledger=settings.spend_ledger,
            outage_budget=settings.outage_budget,
            redis_url=settings.redis_url,
            rate_limit_name=settings.rate_limit_name,
            cache=settings.cache,
            cache_path=settings.cache_path,
        ),
        data_dir=settings.data_dir,
        max_tokens=settings.max_tokens,
        dry_run_latency=settings.dry_run_latency,
        pipeline_parallel_enabled=settings.pipeline_parallel_enabled,
        allow_outside_paths=settings.allow_outside_paths,
    )


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` can be neither used nor made as a folder (None: it can). Nothing is left
    behind: a missing folder is tried by making (and removing) a scratch folder in the nearest
    one that exists, so a path under a file, under ``/proc`` or on a read-only disk fails here,
    at start-up, and not when the first checkpoint is written."""
    if folder.is_dir():
        return None
    if folder.exists() or folder.is_symlink():
        return f"{folder} is not a folder"
    existing = folder.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder} cannot be made: {existing} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".aita-", dir=existing))
    except OSError as error:
        return f"{folder} cannot be made ({error.strerror or error})"
    return None


def _from_dotenv(base_url: str) -> Path | None:
    """The ``.env`` file ``base_url`` was read from, if it was: not set in the environment (which
    wins), set in the file to this value, and not the default."""
    if base_url == DEFAULT_BASE_URL or any(k.upper() == "AITA_BASE_URL" for k in os.environ):
        return None
    if not DOTENV_FILE.is_file():
        return None
    values = dotenv_values(DOTENV_FILE, encoding="utf-8")
    in_file = [v for k, v in values.items() if k.upper() == "AITA_BASE_URL"]
    return DOTENV_FILE.resolve() if in_file and in_file[-1] == base_url else None


@lru_cache(maxsize=1)
def get_config() -> AitaConfig:
    """The process-wide settings, read once. ``get_config.cache_clear()`` re-reads them."""
    return load_config()
