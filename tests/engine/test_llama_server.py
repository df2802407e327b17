"""Against a real llama.cpp server: it answers ``json_schema`` with a 500, so structured output
must negotiate; the checks are of the protocol (calls succeed, schemas validate, fallbacks are
flagged), not of a 135M model's wisdom."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from aita.cli import main
from aita.config import get_config
from aita.engine import LLMMessage, LLMTask, SimpleLLMTask, create_openrouter_client
from tests.support.doubles import executor_for
from tests.support.llama_server import llama_server  # noqa: F401 - the fixture

pytestmark = [pytest.mark.real_server, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"


class Capital(BaseModel):
    country: str
    capital: str


class CapitalTask(LLMTask):
    response_model: ClassVar[type[BaseModel] | None] = Capital

    def __init__(self, country: str) -> None:
        self.country = country

    @property
    def task_id(self) -> str:
        return self.country

    def build_messages(self) -> list[LLMMessage]:
        return [LLMMessage("user", f"What is the capital of {self.country}? Answer in JSON.")]

    def get_llm_params(self) -> dict[str, int]:
        return {"max_tokens": 64}


def test_plain_and_structured_tasks_succeed(llama_server: str) -> None:  # noqa: F811
    client = create_openrouter_client(api_key="local", base_url=llama_server, model="smollm2")
    executor = executor_for(client, max_workers=2, max_retries=3)
    plain = [SimpleLLMTask(f"p{i}", f"Say hello to {name}.", max_tokens=16)
             for i, name in enumerate(["Ada", "Alan", "Grace"])]  # fmt: skip
    result = executor.execute_batch(plain)
    assert all(r.success and r.result.strip() for r in result.task_results)
    structured = executor.execute_batch([CapitalTask(c) for c in ("France", "Japan", "Peru")])
    assert all(isinstance(r.result, Capital) for r in structured.task_results), [
        r.error for r in structured.task_results
    ]
    assert client.formats.mode == "json_object" and client.formats.refusals == 1


def test_generate_rubric_writes_every_key_and_rubric(
    llama_server: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data / "midterm", ignore=shutil.ignore_patterns("results"))
    monkeypatch.setenv("OPENROUTER_API_KEY", "local")
    monkeypatch.setenv("AITA_BASE_URL", llama_server)
    monkeypatch.setenv("AITA_MODEL", "smollm2")
    monkeypatch.setenv("AITA_MAX_TOKENS", "150")
    monkeypatch.setenv("AITA_MAX_RETRIES", "0")
    monkeypatch.setenv("AITA_MAX_WORKERS", "2")
    get_config.cache_clear()
    with caplog.at_level(logging.WARNING):
        code = main(
            ["generate-rubric", "--data-dir", str(data), "--assignment", "midterm", "--yes"]
        )
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    results = data / "midterm" / "results"
    keys = json.loads((results / "answer_keys.json").read_text())
    rubrics = json.loads((results / "rubrics.json").read_text())
    assert len(keys) == 10 and len(rubrics) == 10, out + err
    spec = json.loads((data / "midterm" / "exam_spec.json").read_text())
    points = {q["question_id"]: q["points"] for q in spec["questions"]}
    for qid, rubric in rubrics.items():
        assert sum(c["points"] for c in rubric["criteria"]) == pytest.approx(points[qid])
        assert rubric["source"] in {"generated", "instructor", "fallback"}
        assert rubric["source"] != "fallback" or rubric["needs_review"]
    refusals = [r for r in caplog.records if "refused structured output" in r.getMessage()]
    assert len(refusals) == 1  # json_schema refused once, then json_object: no storm of 500s
