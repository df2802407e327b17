"""What a teacher sees and feeds in: the options every command shares, help, quiet output,
completion, prices, and text from outside printed safely."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

import aita
from aita.cli import build_parser, main
from aita.cli._resume import command_line
from aita.cli._summary import cost_text
from aita.config import get_config
from aita.engine import Usage, cost_of, estimate_cost
from aita.pipelines.dry_run import dry_run_responder
from aita.simulator import ProviderSimulator
from aita.terminal import printable
from tests.support.doubles import SimulatorFactory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "midterm"
STUDY_GUIDE = ROOT / "examples" / "pipelines" / "study_guide.yaml"
REQUESTS = ROOT / "examples" / "batch" / "requests.jsonl"
#: the example pipeline with the --input its {{input}} needs
GUIDE = (str(STUDY_GUIDE), "--input", "photosynthesis")
MODEL_COMMANDS = ["generate-rubric", "transcribe", "grade", "generate-course", "run"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    return tmp_path / "data"


def as_provider(
    monkeypatch: pytest.MonkeyPatch, sim: ProviderSimulator, model: str = "sim/echo"
) -> None:
    """Point aita at ``sim`` as if it were a real provider."""
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", model)
    get_config.cache_clear()


# -- options and help -----------------------------------------------------------------------


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"aita {aita.__version__}"
    assert aita.__version__ != "0.0.0"


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_that_calls_a_model_takes_model_cache_and_quiet(command: str) -> None:
    required = {
        "generate-rubric": ["--assignment", "a"],
        "transcribe": ["--assignment", "a"],
        "grade": ["--assignment", "a"],
        "generate-course": ["--content", "n.md", "--title", "t"],
        "run": ["p.yaml"],
    }[command]
    args = build_parser().parse_args([command, *required, "--model", "x/y", "--no-cache", "-q"])
    assert (args.model, args.cache, args.quiet) == ("x/y", False, True)
    args = build_parser().parse_args([command, *required, "--cache"])
    assert (args.model, args.cache, args.quiet) == (None, True, False)


@pytest.mark.parametrize(
    "command", [*MODEL_COMMANDS, "report", "checkpoints", "costs", "cache", "demo", "completion"]
)
def test_help_shows_defaults_and_examples_line_by_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    examples = text.split("examples:\n", 1)[1].splitlines()
    assert examples and all(line.startswith("  aita ") or not line for line in examples[:2])
    if command in MODEL_COMMANDS:
        assert "AITA_MODEL" in text and "AITA_CACHE" in text and "-q, --quiet" in text
    if command == "generate-course":
        assert "(default: courses)" in text and "(default: 8)" in text


def test_model_option_is_the_model_called(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def responder(request: dict[str, Any]) -> str | None:
        asked.append(request["model"])
        return dry_run_responder(request)

    as_provider(monkeypatch, simulator(announce=False, responder=responder))
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--yes"]
    code, _, err = run(capsys, "generate-rubric", *common, "--model", "openai/gpt-4o-mini")
    assert code == 0, err
    assert set(asked) == {"openai/gpt-4o-mini"}
    assert "about to make 19 call(s) to openai/gpt-4o-mini" in err


def test_cache_option_answers_a_repeated_request_without_a_call(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sim = simulator(announce=False, responder=dry_run_responder)
    as_provider(monkeypatch, sim)
    monkeypatch.setenv("AITA_CACHE_PATH", str(tmp_path / "cache.sqlite3"))
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--yes"]
    assert run(capsys, "generate-rubric", *common, "--cache")[0] == 0
    asked = sim.stats.requests
    code, out, _ = run(capsys, "generate-rubric", *common, "--cache", "--force")
    assert code == 0 and sim.stats.requests == asked  # every answer from the cache
    assert "19 tasks: 0 done, 19 reused, 0 failed" in out
    assert run(capsys, "generate-rubric", *common, "--no-cache", "--force")[0] == 0
    assert sim.stats.requests == 2 * asked


def test_quiet_prints_only_results_and_errors(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(data_dir), "--assignment", "midterm", "--dry-run"]
    code, out, err = run(capsys, "generate-rubric", *common, "-q")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "CS 210 Midterm: Algorithms and Systems: answer keys 10/10, rubrics 10/10 (1 from the "
        "instructor, 0 flagged for review); 0 reused from earlier runs",
        "19 tasks: 19 done, 0 failed",
    ]
    code, out, _ = run(capsys, "generate-rubric", *common)
    assert "calls:" not in out and "up to date" in out  # not quiet: the information is back


def test_quiet_run_has_no_step_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    code, out, err = run(capsys, "-q", "run", *GUIDE, "--dry-run", "--output", str(output))
    assert code == 0 and err == ""
    assert len(out.splitlines()) == 1 and "6 steps: 6 done, 0 failed" in out
    code, _, err = run(capsys, "run", *GUIDE, "--dry-run", "--output", str(output))
    assert "[INFO] [1/1] Reused: outline" in err  # step lines are info: back without -q


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_knows_the_commands_and_options(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0
    for word in ("generate-rubric", "checkpoints", "--allow-outside-paths", "--no-cache"):
        assert word in out


# -- prices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "known"),
    [
        ("openai/gpt-4o-mini", True),  # the built-in table
        ("gpt-4o-mini", True),  # a bare name
        ("deepseek/deepseek-chat", True),  # genai-prices, OpenRouter's name
        ("meta-llama/llama-3.1-8b-instruct", True),
        ("claude-sonnet-4-0", True),  # genai-prices, the provider's own name
        ("nobody/knows-this-model", False),
        ("dry-run/simulator", False),
        ("SmolLM2-135M-Instruct", False),
    ],
)
def test_prices_come_from_the_table_then_genai_prices_and_unknown_is_none(
    model: str, known: bool
) -> None:
    cost = cost_of(model, Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000))
    assert (cost is not None) == known
    if known:
        assert cost is not None and 0 < cost < 100


def test_reported_cost_wins_over_any_table() -> None:
    assert cost_of("deepseek/deepseek-chat", Usage(10, 10, 20, cost=0.5)) == 0.5


def test_genai_prices_reads_its_data_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("genai-prices tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # models no other test prices, so their look-up happens here, under the guard
    assert cost_of("qwen/qwen3-32b", Usage(1000, 1000)) is not None
    assert cost_of("mistral-small-latest", Usage(1000, 1000)) is not None


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ("deepseek/deepseek-chat", r"\(estimated \$\d+\.\d{4} before retries\)"),
        ("nobody/knows-this-model", r"\(price unknown\)"),
    ],
)
def test_spend_check_shows_a_price_genai_prices_knows_and_says_when_nobody_does(
    model: str,
    shown: str,
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    as_provider(monkeypatch, simulator(announce=False, report_cost=False))
    code, _, err = run(
        capsys, "run", *GUIDE, "--model", model, "--yes", "--output", str(tmp_path / "o")
    )
    assert code == 0, err
    where = rf"to {re.escape(model)} at 127\.0\.0\.1"
    assert re.search(rf"about to make 6 call\(s\) {where} {shown}", err)


def test_unknown_prices_are_never_shown_as_zero(
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    as_provider(monkeypatch, simulator(announce=False, report_cost=False))
    args = ["run", *GUIDE, "--model", "nobody/knows-this-model", "--yes"]
    code, out, _ = run(capsys, *args, "--output", str(tmp_path / "o.json"))
    assert code == 0 and "cost: price unknown" in out
    code, out, _ = run(capsys, "checkpoints", "list")
    assert "cost price unknown" in out and "$0.0000" not in out
    code, out, _ = run(capsys, "costs")
    assert "nobody/knows-this-model" in out and "price unknown (6 calls;" in out
    assert re.search(r"by operation:\n  run +price unknown", out)
    assert "$0.0000" not in out and "unknown " not in out.replace("price unknown", "")


def test_cost_text_never_says_zero_for_an_unknown_price() -> None:
    assert cost_text(0.0, 3) == "price unknown"
    assert cost_text(0.5, 2) == "$0.5000 + 2 call(s) at an unknown price"
    assert cost_text(0.0, 0, 4) == "$0 (simulated)"
    assert cost_text(0.0, 0) == "$0"


def test_estimate_is_none_when_one_model_has_no_price() -> None:
    from aita.engine import SimpleLLMTask

    tasks = [SimpleLLMTask("a", "hello")]
    assert estimate_cost(tasks, "deepseek/deepseek-chat") is not None
    assert estimate_cost(tasks, "nobody/knows-this-model") is None


# -- text from outside ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("red \x1b[31mALERT\x1b[0m done", "red ALERT done"),
        ("clear\x1b[2J\x1b[Hscreen", "clearscreen"),
        ("title\x1b]0;pwned\x07 here", "title here"),
        ("two\nlines\r\nand\ttab", "two lines and tab"),
        ("bell\x07 nul\x00 del\x7f c1\x9b31m", "bell nul del c131m"),
        ("bidi \u202eevil\u202c ok", "bidi evil ok"),
        ("ünïcödé ✓", "ünïcödé ✓"),
    ],
)
def test_printable_strips_control_characters(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_text_is_never_changed_so_its_fast_path_changes_nothing() -> None:
    # printable() returns str.isprintable() text as it is: every character its patterns would
    # remove or replace must therefore be one isprintable() refuses. Checked over all of Unicode.
    from aita import terminal

    shown = "".join(c for c in map(chr, range(0x110000)) if c.isprintable())
    patterns = (terminal._ESCAPE_SEQUENCE, terminal._LINE_BREAKS, terminal._CONTROLS)
    assert len(shown) > 100_000
    assert [p.search(shown) for p in patterns] == [None, None, None]
    assert printable(shown) == shown


def test_provider_error_text_is_printed_without_control_characters(
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The simulator, like real providers, echoes an unknown model's name in its error.
    sim = simulator(announce=False, models=frozenset({"sim/echo"}))
    as_provider(monkeypatch, sim)
    pipeline = tmp_path / "p.yaml"
    evil = "evil\\e[2J\\e]0;pwned\\a\\nFAKE: all done\\e[0m"
    step = f'{{name: s, type: text, model: "{evil}", params: {{prompt: hi}}}}'
    pipeline.write_text(f"steps: [{step}]")
    code, out, err = run(capsys, "run", str(pipeline), "--yes")
    assert code == 1
    assert "\x1b" not in out + err and "\x07" not in out + err
    failure = [line for line in err.splitlines() if line.startswith("failed s:")]
    assert len(failure) == 1 and "FAKE: all done" in failure[0]
    code, out, _ = run(capsys, "checkpoints", "show", str(next(Path("checkpoints").iterdir())))
    assert "\x1b" not in out and "failed s:" in out


def test_ctrl_c_says_the_command_that_resumes_not_the_python_hint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The engine's BatchInterrupted speaks to Python callers; the CLI says the command."""
    import aita.cli.records
    from aita.engine import BatchInterrupted

    def interrupted(args: object) -> int:
        raise BatchInterrupted(
            "interrupted after 3/19 tasks; run the batch again with checkpoint_name='x'",
            "x",
            tmp_path / "x.checkpoint.json",
        )

    monkeypatch.setattr(aita.cli.records, "_costs", interrupted)
    monkeypatch.setattr("sys.argv", ["aita", "costs"])
    code, _, err = run(capsys, "costs")
    assert code == 130
    assert "checkpoint_name" not in err and "3/19" not in err
    assert err.strip().splitlines()[-1] == (
        f"finished work is saved in {tmp_path / 'x.checkpoint.json'}; resume with: aita costs"
    )


@pytest.mark.parametrize(
    ("command", "handler", "resume"),
    [
        (
            ["generate-rubric", "--assignment", "midterm", "--force", "--yes"],
            "aita.cli.assignment._generate_rubric",
            "aita generate-rubric --assignment midterm --yes",
        ),
        (
            ["run", "p.yaml", "--no-resume", "--input", "--force is a fine topic", "--dry-run"],
            "aita.cli.workflows._run_pipeline",
            "aita run p.yaml --input '--force is a fine topic' --dry-run",
        ),
        (  # argparse takes an abbreviation: it starts over just the same
            ["grade", "--assignment", "midterm", "--forc", "--no-res", "--dry-run"],
            "aita.cli.assignment._grade",
            "aita grade --assignment midterm --dry-run",
        ),
    ],
)
def test_the_resume_line_after_ctrl_c_leaves_out_the_options_that_start_over(
    command: list[str],
    handler: str,
    resume: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--force and --no-resume would redo what the interrupted run saved; nothing else goes."""

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(handler, interrupted)
    monkeypatch.setattr("sys.argv", ["aita", *command])
    code, _, err = run(capsys, *command)
    assert code == 130
    assert err.strip().splitlines()[-1] == f"finished work is saved; resume with: {resume}"


def test_command_line_leaves_out_only_the_options_named_and_none_after_the_double_dash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    typed = ["run", "a b.yaml", "--force", "--no-resume", "--no-progress", "--", "--force"]
    monkeypatch.setattr("sys.argv", ["aita", *typed])
    assert command_line() == "aita run 'a b.yaml' --force --no-resume --no-progress -- --force"
    assert command_line(["--force"]) == ("aita run 'a b.yaml' --no-resume --no-progress -- --force")
    assert (
        command_line(["--force", "--no-resume"]) == "aita run 'a b.yaml' --no-progress -- --force"
    )


def test_results_file_of_a_run_is_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    output = tmp_path / "o.json"
    assert run(capsys, "run", *GUIDE, "--dry-run", "--output", str(output))[0] == 0
    assert json.loads(output.read_text())["steps"]["outline"]["status"] == "done"


@pytest.mark.parametrize(
    "command",
    [
        ["batch", "run", str(REQUESTS), "-o", "out.jsonl", "--dry-run"],
        ["run", *GUIDE, "--dry-run", "--output", "out.json"],
    ],
)
@pytest.mark.parametrize(
    ("folder", "problem"),
    [
        ("a-file", "{folder} is not a folder"),
        ("a-file/checkpoints", "{folder} cannot be made: a-file is not a folder"),
        ("/proc/aita/checkpoints", "{folder} cannot be made (No such file or directory)"),
    ],
)
def test_a_checkpoint_folder_that_cannot_be_made_is_bad_input_and_nothing_is_written(
    command: list[str],
    folder: str,
    problem: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("AITA_CHECKPOINT_DIR", folder)
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run(capsys, *command)
    assert (code, out) == (2, "")
    assert err == f"aita: AITA_CHECKPOINT_DIR: {problem.format(folder=folder)}\n"
    assert sorted(tmp_path.rglob("*")) == before
