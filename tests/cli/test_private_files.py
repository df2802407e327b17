"""Everything aita writes holds prompts or answers: each file is 0600 and each folder it makes
0700, whatever the umask lets through (journals, results, the batch results file, the response
cache, the spend ledger)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from aita.cli import main
from aita.config import get_config
from aita.pipelines.dry_run import dry_run_responder
from tests.support.doubles import TEST_KEY, SimulatorFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    found = {str(root): stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.usefixtures("open_umask")
def test_journals_results_cache_and_ledger_are_for_their_owner_only(
    simulator: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator(announce=False, responder=dry_run_responder)
    monkeypatch.setenv("OPENROUTER_API_KEY", TEST_KEY)
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/unpriced")
    monkeypatch.setenv("AITA_CACHE", "true")
    monkeypatch.setenv("AITA_CACHE_PATH", str(tmp_path / "cache" / "aita" / "responses.sqlite3"))
    monkeypatch.setenv("AITA_SPEND_LEDGER", str(tmp_path / "ledger" / "spend.jsonl"))
    get_config.cache_clear()
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    args = ["--data-dir", str(tmp_path / "data"), "--assignment", "midterm", "--yes"]
    assert main(["generate-rubric", *args]) == 0
    assert main(["transcribe", *args, "--student", "bob"]) == 0
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"custom_id": "a", "prompt": "hello"}) + "\n")
    out = tmp_path / "batch" / "out.jsonl"
    assert main(["batch", "run", str(requests), "-o", str(out), "--yes"]) == 0

    written = {
        **modes(tmp_path / "data" / "midterm" / "results"),
        **modes(tmp_path / "checkpoints"),
        **modes(tmp_path / "cache"),
        **modes(tmp_path / "ledger"),
        **modes(tmp_path / "batch"),
    }
    assert any(name.endswith(".sqlite3") for name in written)  # the cache was written
    assert any("transcribe" in name and "checkpoint" in name for name in written)
    wrong = {
        name: oct(mode)
        for name, mode in written.items()
        if mode != (0o700 if Path(name).is_dir() else 0o600)
    }
    assert not wrong
