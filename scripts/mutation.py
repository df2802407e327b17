"""Mutation testing, module by module: does each module's own test file notice when its code breaks?

    pip install -e '.[dev]'                 # mutmut comes with the dev extra
    python scripts/mutation.py              # every module below, one after another
    python scripts/mutation.py limiter retry --diffs
    python scripts/mutation.py --fail-under 90 limiter retry journal

mutmut (3.x) changes one thing at a time in a module (``<`` to ``<=``, ``+`` to ``-``, a constant,
a dropped argument, ...) and runs that module's tests against each change, the *mutant*. A test
that fails kills it; a mutant every test passes *survived*: a behaviour the tests do not pin
down. The score is killed / total per module (a mutant its tests never reach counts as not
killed). Survivors are listed by name; ``--diffs`` shows each one's change. Those that no test
could ever tell apart from the original (equivalent mutants) are explained in
``docs/mutation.md`` and marked here.

Each module runs in a temporary copy of the project with a ``[tool.mutmut]`` section of its own
(the shared settings of ``pyproject.toml`` plus the module and its tests), one worker process at
a time (``--jobs N``: N at once), and only the module's own fast tests (never ``slow`` or
``real_server`` ones). Nothing is written in the checkout; the copy is removed at the end
(``--keep`` leaves it, to browse it with ``mutmut browse`` from inside). About 10 minutes for
all five modules on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS_DOC = ROOT / "docs" / "mutation.md"
#: What the temporary copy needs: the package, the tests and the files the tests read.
COPIED = ("aita", "tests", "examples", "pyproject.toml")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "results", ".hypothesis")


@dataclass(frozen=True)
class Module:
    """A module under mutation, the tests that specify it, and optionally which functions."""

    name: str
    source: str
    tests: tuple[str, ...]
    #: mutmut mutant-name patterns: only these functions' mutants are run and counted
    functions: tuple[str, ...] = ()


MODULES = (
    Module(
        "limiter",
        "aita/engine/_limiter.py",
        ("tests/engine/test_rate_limiter.py", "tests/engine/test_adaptive_rate.py"),
    ),
    Module("retry", "aita/engine/_retry.py", ("tests/engine/test_retry.py",)),
    Module(
        "journal",
        "aita/engine/_journal.py",
        # The journal's own tests, on real files. test_resume_keys and test_stream run it through
        # the executor and the HTTP simulator: 3 minutes more here, and no mutant they alone kill.
        ("tests/engine/test_checkpoint.py", "tests/engine/test_journal_records.py"),
    ),
    Module(
        "lifecycle",
        "aita/engine/_lifecycle.py",
        # Not test_executor: its Ctrl-C test sends SIGINT, which mutmut's runner takes as its own.
        (
            "tests/engine/test_lifecycle.py",
            "tests/engine/test_accounting.py",
            "tests/engine/test_cache.py",
            "tests/engine/test_batching.py",
        ),
    ),
    Module(
        "batch_api",
        "aita/engine/_batch_api.py",
        # Its tests poll on a fake clock (Ctrl-C is raised in the process, no SIGINT).
        (
            "tests/engine/test_batch_api.py",
            "tests/engine/test_batch_api_polling.py",
            "tests/engine/test_batch_api_state.py",
            "tests/engine/test_batch_overdue.py",
        ),
    ),
    Module("exam", "aita/pipelines/exam.py", ("tests/pipelines/test_pipelines.py",)),
    Module(
        "tasks",
        "aita/pipelines/tasks.py",
        ("tests/pipelines/test_pipelines.py",),
        functions=("aita.pipelines.tasks.xǁ*Taskǁparse_response__mutmut_*",),
    ),
)

#: mutmut's words for a mutant's fate; "killed" is the only good one for a mutant that ran,
#: "timeout" (the tests hung or spun) and "caught by type check" count as killed too.
KILLED = {"killed", "timeout", "caught by type check"}


@dataclass
class Score:
    module: Module
    statuses: dict[str, str] = field(default_factory=dict)
    diffs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def killed(self) -> int:
        return sum(status in KILLED for status in self.statuses.values())

    @property
    def total(self) -> int:
        return len(self.statuses)

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0

    @property
    def survivors(self) -> dict[str, str]:
        return {name: s for name, s in self.statuses.items() if s not in KILLED}


def mutmut_config(module: Module) -> str:
    """The ``[tool.mutmut]`` section for one module: the shared settings of ``pyproject.toml``
    with the module as the only file mutated and its tests as the only ones run."""
    shared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    settings = {
        **shared,
        "only_mutate": [module.source],
        "pytest_add_cli_args_test_selection": list(module.tests),
        "use_git_change_detection": False,  # the copy is no git checkout
    }
    return "[tool.mutmut]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def without_mutmut_section(pyproject: str) -> str:
    """``pyproject.toml`` without its ``[tool.mutmut]`` table (the copy gets its own)."""
    return re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", pyproject)


def mutmut(*args: str, cwd: Path, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run mutmut from the interpreter running this script (the project's environment)."""
    command = [sys.executable, "-c", "from mutmut.__main__ import cli; cli()", *args]
    # One hash seed: mutmut hands each mutant's tests to pytest in the order of a set of names.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    if log is None:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    with open(log, "w") as out:
        return subprocess.run(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )


def run_module(module: Module, work: Path, diffs: bool, jobs: int = 1) -> Score:
    """Copy the project into ``work``, run mutmut there over ``module``, and read the verdicts."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=IGNORED)
        else:
            shutil.copy2(source, work / name)
    pyproject = work / "pyproject.toml"
    pyproject.write_text(without_mutmut_section(pyproject.read_text()) + mutmut_config(module))

    started = time.monotonic()
    log = work / "mutmut.log"
    done = mutmut("run", "--max-children", str(jobs), *module.functions, cwd=work, log=log)
    score = Score(module, seconds=time.monotonic() - started)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed on {module.source} (exit {done.returncode}):\n{tail}")

    listed = mutmut("results", "--all", "true", cwd=work)
    prefix = module.source.removesuffix(".py").replace("/", ".") + "."
    for line in listed.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name.startswith(prefix) or status == "not checked":
            continue  # another module's file, or a function this module's run leaves out
        score.statuses[name] = status
    if diffs:
        for name in score.survivors:
            score.diffs[name] = changed_lines(mutmut("show", name, cwd=work).stdout)
    return score


def changed_lines(diff: str) -> str:
    """The removed and added lines of a unified diff, without its headers."""
    lines = diff.splitlines()
    return "\n".join(
        line
        for line in lines
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()
    )


def documented_equivalents() -> set[str]:
    """Mutant names that ``docs/mutation.md`` explains as equivalent (in backquotes)."""
    if not EQUIVALENTS_DOC.exists():
        return set()
    return set(re.findall(r"`([\w.ǁ]+__mutmut_\d+)`", EQUIVALENTS_DOC.read_text()))


def report(scores: list[Score], equivalents: set[str]) -> None:
    print()
    print(f"{'module':<9} {'file':<26} {'killed':>10} {'score':>7} {'survived':>9} {'time':>7}")
    for s in scores:
        print(
            f"{s.module.name:<9} {s.module.source:<26} {f'{s.killed}/{s.total}':>10} "
            f"{s.percent:>6.1f}% {len(s.survivors):>9} {s.seconds:>6.0f}s"
        )
    for s in scores:
        if not s.survivors:
            continue
        print(f"\n{s.module.name}: {len(s.survivors)} not killed")
        for name, status in s.survivors.items():
            note = "  (equivalent: docs/mutation.md)" if name in equivalents else ""
            print(f"  {name}  [{status}]{note}")
            for line in s.diffs.get(name, "").splitlines():
                print(f"      {line}")


def main(argv: list[str] | None = None) -> int:
    names = [m.name for m in MODULES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "modules", nargs="*", metavar="MODULE", help=f"of {', '.join(names)} (default: all)"
    )
    parser.add_argument("--diffs", action="store_true", help="show each survivor's change")
    parser.add_argument(
        "--fail-under",
        type=float,
        metavar="PERCENT",
        help="exit 1 if a module's score is below PERCENT",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary copies (for mutmut browse)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="mutants tested at once (default: 1)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(names))
    if unknown:
        parser.error(f"no module {', '.join(unknown)}: choose from {', '.join(names)}")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("mutmut is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2

    chosen = [m for m in MODULES if not args.modules or m.name in args.modules]
    scores = []
    for module in chosen:
        work = Path(tempfile.mkdtemp(prefix=f"aita-mutation-{module.name}-"))
        print(f"{module.name}: {module.source}, tests: {' '.join(module.tests)}", flush=True)
        try:
            score = run_module(module, work, args.diffs, max(1, args.jobs))
        finally:
            if args.keep:
                print(f"  kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        print(f"  {score.killed}/{score.total} killed ({score.percent:.1f}%)", flush=True)
        scores.append(score)
    report(scores, documented_equivalents())
    if args.fail_under is not None and any(s.percent < args.fail_under for s in scores):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
