"""The mcd-score and mcd-export commands, in-process with click.testing.CliRunner."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner
from scorer_support import exported_model, plain_graph, read_h5, write_bad_files, write_digits

from export.cli import main as export_main
from scorer.cli.main import main

SCORE_OPTIONS = ["--model", "MCD_SCORE_MODEL", "--passes", "--seed", "--batch-size", "--device",
                 "--save-passes", "--overwrite", "--resume", "--files-from", "--allow-outside",
                 "--workers", "--max-memory", "--max-pixels", "--max-file-size", "--max-image-memory",
                 "--no-draft", "--commit-every", "--quiet", "--json-summary"]
HELP_CASES = {
    # the group's help shows the scoring options too, not only the subcommands
    "mcd-score": (main, ["--help"], ["score", "compare", "table", "IMAGES", "OUT.h5", "Exit codes",
                                     "--version", *SCORE_OPTIONS]),
    "mcd-score score": (main, ["score", "--help"], [*SCORE_OPTIONS, "label"]),
    "mcd-score compare": (main, ["compare", "--help"], ["REFERENCE", "NEW", "--atol", "--rtol", "--worst"]),
    "mcd-score table": (main, ["table", "--help"], ["--csv", "--parquet", "--where", "--sort", "--top"]),
    "mcd-score report": (main, ["report", "--help"], ["RESULTS", "--json-summary", "--ood", "--images"]),
    "mcd-export": (export_main, ["--help"], ["MODEL", "OUT", "--input-size", "--color", "--scale"]),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return exported_model(tmp_path_factory, "digits")


@pytest.fixture
def digits(tmp_path) -> Path:
    root = tmp_path / "images"
    write_digits(root, per_class=2, classes=3)
    return root


def invoke(*args: str, env: dict[str, str | None] | None = None, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, input=input)


@pytest.mark.parametrize("case", sorted(HELP_CASES))
def test_every_command_has_help(case):
    command, args, expected = HELP_CASES[case]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output, f"{case} --help does not mention {text}"
    # every option of the command is documented with some help text
    target = command.commands[args[0]] if len(args) > 1 else command
    for param in target.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.help, f"{case}: option {param.opts} has no help text"
            assert param.opts[-1] in result.output


def test_default_command_needs_no_verb(model, digits, tmp_path):
    out = tmp_path / "out.h5"
    result = invoke(digits, out, "--model", model, "--passes", "5")
    assert result.exit_code == 0, result.output
    data, attrs = read_h5(out)
    assert len(data["path"]) == 6
    assert attrs["passes"] == 5
    # the explicit verb gives the same rows
    out2 = tmp_path / "out2.h5"
    assert invoke("score", digits, out2, "--model", model, "--passes", "5").exit_code == 0
    assert list(read_h5(out2)[0]["key"]) == list(data["key"])


def test_model_from_environment(model, digits, tmp_path):
    out = tmp_path / "out.h5"
    result = invoke(digits, out, "--passes", "4", env={"MCD_SCORE_MODEL": str(model)})
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_missing_model_is_a_usage_error(digits, tmp_path):
    result = invoke(digits, tmp_path / "out.h5", env={"MCD_SCORE_MODEL": None})
    assert result.exit_code == 2
    assert "--model" in result.output


def test_nonexistent_model_is_a_usage_error(digits, tmp_path):
    result = invoke(digits, tmp_path / "out.h5", "--model", tmp_path / "none.onnx")
    assert result.exit_code == 2
    assert "does not exist" in result.output


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_files_from(model, digits, tmp_path, source):
    listed = ["d2/0001.png", "d0/0000.png", "# a comment", "", "d1/0001.png"]
    text = "\n".join(listed) + "\n"
    out = tmp_path / "out.h5"
    if source == "file":
        list_file = tmp_path / "list.txt"
        list_file.write_text(text, encoding="utf-8")
        result = invoke(digits, out, "--model", model, "--passes", "3", "--files-from", list_file)
    else:
        result = invoke(digits, out, "--model", model, "--passes", "3", "--files-from", "-", input=text)
    assert result.exit_code == 0, result.output
    data, _ = read_h5(out)
    assert list(data["path"]) == ["d2/0001.png", "d0/0000.png", "d1/0001.png"]
    assert list(data["status"]) == ["ok"] * 3
    assert "label" not in data


def test_exit_code_3_when_some_images_failed(model, digits, tmp_path):
    write_bad_files(digits / "bad")
    out = tmp_path / "out.h5"
    result = invoke(digits, out, "--model", model, "--passes", "3")
    assert result.exit_code == 3, result.output
    assert "3 failed" in result.stderr
    assert out.exists()


def test_exit_code_0_and_quiet_prints_nothing(model, digits, tmp_path):
    result = invoke(digits, tmp_path / "out.h5", "--model", model, "--passes", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_json_summary(model, digits, tmp_path):
    write_bad_files(digits / "bad")
    result = invoke(digits, tmp_path / "out.h5", "--model", model, "--passes", "3", "--json-summary")
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert summary["images"] == 9
    assert summary["failed"] == 3
    assert summary["seconds"] > 0
    assert summary["images_per_second"] == pytest.approx(9 / summary["seconds"], rel=0.05, abs=0.01)
    assert summary["provider"] == "CPUExecutionProvider"


def test_progress_off_a_terminal_is_plain_log_lines(model, digits, tmp_path):
    out = tmp_path / "out.h5"
    result = invoke(digits, out, "--model", model, "--passes", "3", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"mcd-score: 6 images; running on CPU, 3 passes, batch 2, 3 passes per call",
                        lines[0])
    assert re.fullmatch(r"scored 6/6 images \(100\.0%\), 0 failed, [0-9.]+ images/s", lines[1])
    assert re.fullmatch(rf"wrote {re.escape(str(out))}: 6 images \(0 resumed\), 0 failed, .* images/s "
                        "on CPU", lines[2])
    assert len(lines) == 3
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert result.stdout == ""


def test_overwrite_and_resume_exclude_each_other(model, digits, tmp_path):
    result = invoke(digits, tmp_path / "out.h5", "--model", model, "--overwrite", "--resume")
    assert result.exit_code == 2
    assert "--overwrite and --resume" in result.output


def test_compare_identical_and_changed(model, digits, tmp_path):
    ref = tmp_path / "ref.h5"
    assert invoke(digits, ref, "--model", model, "--passes", "4").exit_code == 0
    new = tmp_path / "new.h5"
    shutil.copyfile(ref, new)
    result = invoke("compare", ref, new)
    assert result.exit_code == 0, result.output
    with h5py.File(new, "r+") as file:
        file["confidence"][2] = file["confidence"][2] + 0.01
        changed_path = file["path"].asstr()[2]
    result = invoke("compare", ref, new)
    assert result.exit_code == 1, result.output
    assert "confidence" in result.output
    assert changed_path in result.output
    # a tolerance wide enough accepts the change
    assert invoke("compare", ref, new, "--atol", "0.02").exit_code == 0


def test_compare_missing_file_is_an_error(tmp_path):
    result = invoke("compare", tmp_path / "a.h5", tmp_path / "b.h5")
    assert result.exit_code in (1, 2)
    assert "does not exist" in result.output


def test_device_cuda_without_cuda_is_a_usage_error(model, digits, tmp_path, monkeypatch):
    import onnxruntime

    monkeypatch.delenv("MCD_SCORE_DEVICE", raising=False)  # auto as a user gets it
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    result = invoke(digits, tmp_path / "out.h5", "--model", model, "--device", "cuda")
    assert result.exit_code == 2
    assert "--device cuda" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_model_that_is_not_an_mcd_export_graph_is_a_usage_error(digits, tmp_path):
    path = tmp_path / "plain.onnx"
    plain_graph(path)
    result = invoke(digits, tmp_path / "out.h5", "--model", path)
    assert result.exit_code == 2
    assert "not written by mcd-export" in result.output


def test_empty_file_list_is_a_usage_error(model, digits, tmp_path):
    result = invoke(digits, tmp_path / "out.h5", "--model", model, "--files-from", "-", input="# none\n\n")
    assert result.exit_code == 2
    assert "names no images" in result.output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(monkeypatch):
    from scorer.cli.progress import Reporter

    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    reporter = Reporter(quiet=False)
    for done in (2, 5, 7):
        reporter(done, 7, failed=0)
    reporter.close()
    text = screen.getvalue()
    assert "scoring" in text and "7/7" in text
    assert "images/s" not in text  # the plain log line is for non-terminals only


def test_plain_log_lines_off_a_terminal(monkeypatch):
    from scorer.cli.progress import Reporter

    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    reporter = Reporter(quiet=False)
    reporter(3, 7, failed=1)  # within 30 s of the start: no line yet
    reporter(7, 7, failed=1)  # the last one always
    assert screen.getvalue().count("\n") == 1
    assert "scored 7/7 images (100.0%), 1 failed" in screen.getvalue()


def test_version_of_both_commands():
    from importlib.metadata import version

    for command in (main, export_main):
        result = CliRunner().invoke(command, ["--version"])
        assert result.exit_code == 0, result.output
        assert version("mcd-score") in result.output


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_keras_model_is_pointed_to_mcd_export(digits, tmp_path, suffix):
    """A Keras file (.keras or .h5) as --model is a usage error that points to mcd-export, not a
    raw protobuf error."""
    keras_file = tmp_path / f"model{suffix}"
    keras_file.write_bytes(b"PK\x03\x04 a zip, as a .keras file is" if suffix == ".keras"
                           else b"\x89HDF\r\n\x1a\n an HDF5 file")
    result = invoke(digits, tmp_path / "out.h5", "--model", keras_file)
    assert result.exit_code == 2
    assert "is a Keras model" in result.output and f"mcd-export {keras_file}" in result.output


def test_cpu_fallback_is_quiet_and_recorded(model, digits, tmp_path, monkeypatch):
    """Falling back to the CPU prints nothing about CUDA; the summary and the results file record
    it (``cuda_fallback``)."""
    import onnxruntime

    monkeypatch.delenv("MCD_SCORE_DEVICE", raising=False)  # auto as a user gets it
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    out = tmp_path / "out.h5"
    result = invoke(digits, out, "--model", model, "--passes", "3", "--json-summary")
    assert result.exit_code == 0, result.output
    assert "CUDA" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["provider"] == "CPUExecutionProvider" and summary["cuda_fallback"]
    assert read_h5(out)[1]["cuda_fallback"] == summary["cuda_fallback"]


def test_a_folder_named_like_a_command_has_an_unambiguous_spelling(model, tmp_path, monkeypatch):
    """A folder named compare is not taken as the subcommand: the error suggests ./compare, and
    both ./compare and ``score compare`` score it."""
    monkeypatch.chdir(tmp_path)
    write_digits(tmp_path / "compare", per_class=1, classes=2)
    result = invoke("compare", "out.h5", "--model", model)
    assert result.exit_code == 2 and "mcd-score ./compare" in result.stderr
    for spelling in (["./compare"], ["score", "compare"]):
        result = invoke(*spelling, f"out-{len(spelling)}.h5", "--model", model, "--passes", "2")
        assert result.exit_code == 0, result.output
        assert len(read_h5(tmp_path / f"out-{len(spelling)}.h5")[0]["path"]) == 2


def test_a_single_class_folder_with_subfolders_gets_a_hint(model, tmp_path):
    root = tmp_path / "images"
    write_digits(root / "digits", per_class=1, classes=2)
    result = invoke(root, tmp_path / "out.h5", "--model", model, "--passes", "2")
    assert result.exit_code == 0, result.output
    assert f"pass IMAGES={root / 'digits'} instead" in result.stderr
    assert set(read_h5(tmp_path / "out.h5")[0]["label"]) == {"digits"}


def test_written_files_respect_the_umask(model, digits, tmp_path):
    """The ONNX and results files get the mode the umask allows: 0640 under umask 027."""
    import onnx

    from export.api import save

    previous = os.umask(0o027)
    try:
        save(onnx.load(str(model)), tmp_path / "copy.onnx")
        result = invoke(digits, tmp_path / "out.h5", "--model", model, "--passes", "2")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "copy.onnx").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "out.h5").stat().st_mode & 0o777 == 0o640


def test_files_from_outside_images_needs_allow_outside(model, digits, tmp_path):
    """A --files-from line outside IMAGES is refused before anything is read or written, unless
    --allow-outside is given."""
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((digits / "d0" / "0000.png").read_bytes())
    listing = "d0/0000.png\n../elsewhere.png\n"
    result = invoke(digits, tmp_path / "out.h5", "--model", model, "--files-from", "-", input=listing)
    assert result.exit_code == 2 and "line 2 of the file list" in result.output
    assert "--allow-outside" in result.output and not (tmp_path / "out.h5").exists()
    result = invoke(digits, tmp_path / "out.h5", "--model", model, "--files-from", "-",
                    "--allow-outside", "--passes", "2", input=listing)
    assert result.exit_code == 0, result.output
    assert list(read_h5(tmp_path / "out.h5")[0]["status"]) == ["ok", "ok"]
