"""Untrusted input stays in its place: a pipeline file reads only regular files of bounded
size inside its own folder, YAML cannot expand itself, and output paths are checked, all
before any call is made."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from aita.cli import main
from aita.config import get_config
from aita.simulator import ProviderSimulator
from tests.support.doubles import PNG_1PX, SimulatorFactory


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def provider(simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch) -> ProviderSimulator:
    """A simulator standing in for a paid provider: every call it gets would be paid for."""
    sim = simulator(announce=False)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    get_config.cache_clear()
    return sim


def vision_pipeline(folder: Path, image: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(
        "steps:\n"
        "  - {name: intro, type: text, params: {prompt: hello}}\n"
        f"  - {{name: look, type: vision, params: {{image: '{image}', prompt: Read it}}}}\n"
    )
    return path


def refused(capsys: pytest.CaptureFixture[str], provider: ProviderSimulator, *args: str) -> str:
    """Run ``aita run ARGS``: it must exit 2 with one line and make no call."""
    code, out, err = run(capsys, "run", *args, "--yes")
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert provider.stats.requests == 0
    return err


def test_image_outside_the_pipeline_folder_is_refused_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(PNG_1PX)
    path = vision_pipeline(tmp_path / "a" / "b", "../../outside/secret.png")
    err = refused(capsys, provider, str(path))
    assert "step 'look': params.image: ../../outside/secret.png: outside the pipeline" in err
    assert "--allow-outside-paths" in err


def test_absolute_image_path_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG_1PX)
    err = refused(capsys, provider, str(vision_pipeline(tmp_path / "p", str(secret))))
    assert "step 'look': params.image:" in err and "outside the pipeline" in err


def test_symlink_out_of_the_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    (tmp_path / "secret.png").write_bytes(PNG_1PX)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "scan.png").symlink_to(tmp_path / "secret.png")
    err = refused(capsys, provider, str(vision_pipeline(folder, "scan.png")))
    assert "outside the pipeline" in err


def test_allow_outside_paths_reads_a_file_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    (tmp_path / "shared.png").write_bytes(PNG_1PX)
    path = vision_pipeline(tmp_path / "p", "../shared.png")
    args = ["run", str(path), "--yes", "--allow-outside-paths", "--output", "o.json"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert provider.stats.images_received == 1


def test_device_file_is_refused_not_read_until_memory_runs_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    err = refused(
        capsys, provider, str(vision_pipeline(tmp_path, "/dev/zero")), "--allow-outside-paths"
    )
    assert "step 'look': params.image: /dev/zero: not a regular file" in err


def test_fifo_is_refused_not_waited_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    err = refused(capsys, provider, str(vision_pipeline(tmp_path, "pipe.png")))
    assert "step 'look': params.image: pipe.png: not a regular file" in err


def test_missing_image_is_exit_2_naming_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    err = refused(capsys, provider, str(vision_pipeline(tmp_path, "nowhere.png")))
    assert "step 'look': params.image: nowhere.png: no such file" in err


def test_image_over_the_size_limit_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    provider: ProviderSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aita.workflows import yaml_pipeline

    monkeypatch.setattr(yaml_pipeline, "MAX_IMAGE_BYTES", 10)
    (tmp_path / "big.png").write_bytes(PNG_1PX)
    err = refused(capsys, provider, str(vision_pipeline(tmp_path, "big.png")))
    assert "step 'look': params.image: big.png: larger than" in err


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_yaml_aliases_are_refused_before_they_expand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    params = textwrap.indent(BILLION_LAUGHS, "      ")
    path = tmp_path / "bomb.yaml"
    path.write_text(f"steps:\n  - name: s\n    type: text\n    params:\n{params}")
    err = refused(capsys, provider, str(path))
    assert "invalid YAML at line 6: aliases (*name) are not allowed in a pipeline" in err


def test_pipeline_file_over_the_size_limit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * 200_000 + "steps: [{name: s, type: text}]\n")
    assert "huge.yaml: larger than 1 MB" in refused(capsys, provider, str(path))


def test_pipeline_file_that_is_a_fifo_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    os.mkfifo(tmp_path / "p.yaml")
    assert "p.yaml: not a regular file" in refused(capsys, provider, str(tmp_path / "p.yaml"))


def test_deeply_nested_yaml_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("steps: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "deep.yaml: invalid YAML" in refused(capsys, provider, str(path))


# -- output paths ---------------------------------------------------------------------------


def text_pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text("steps: [{name: s, type: text, params: {prompt: hi}}]\n")
    return path


def test_run_output_under_a_file_fails_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    (tmp_path / "a_file").write_text("x")
    err = refused(
        capsys, provider, str(text_pipeline(tmp_path)), "--output", str(tmp_path / "a_file/o.json")
    )
    assert "a_file: the folder of the results file is a file, not a folder" in err


def test_run_output_that_is_a_folder_fails_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    (tmp_path / "folder").mkdir()
    err = refused(
        capsys, provider, str(text_pipeline(tmp_path)), "--output", str(tmp_path / "folder")
    )
    assert "folder: the results file is a folder, not a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_run_output_without_permission_fails_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    err = refused(
        capsys, provider, str(text_pipeline(tmp_path)), "--output", str(locked / "o.json")
    )
    assert "cannot write" in err


def test_run_output_in_a_new_folder_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    output = tmp_path / "new" / "deeper" / "o.json"
    args = ["run", str(text_pipeline(tmp_path)), "--yes", "--output", str(output)]
    assert run(capsys, *args)[0] == 0
    assert output.exists()


def test_course_output_dir_that_is_a_file_fails_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: ProviderSimulator
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\nSome notes.")
    (tmp_path / "courses").write_text("not a folder")
    args = ["generate-course", "--content", str(notes), "--title", "T", "--yes"]
    code, _, err = run(capsys, *args, "--output-dir", str(tmp_path / "courses"))
    assert code == 2 and err.count("\n") == 1
    assert "courses: the output folder is a file, not a folder" in err
    assert provider.stats.requests == 0
