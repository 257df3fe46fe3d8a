"""scorer.scoring end to end: an exported Keras model scoring real image files into HDF5."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from paths import DATA
from PIL import Image
from scorer_support import (
    DIGIT_CLASSES,
    assert_same_datasets,
    exported_model,
    read_h5,
    sqrt_values_graph,
    write_bad_files,
    write_digits,
    write_flat_digits,
    write_photos,
)

from scorer.cli.main import main
from scorer.errors import OutputError, ScoreInterrupted, ScorerUsageError
from scorer.metrics import uncertainty as metrics
from scorer.rundir.folder import parts_path
from scorer.scoring import ScoreOptions, score

PASSES = 20
MAX_PIXELS = 1_000_000  # the photographs (<= 512x512) pass, the 1200x1200 "bomb" does not
PROBABILITY_DATASETS = {"path", "key", "status", "reason", "label", "mean", "std", "predicted_class",
                        "confidence", "predictive_entropy", "normalized_entropy", "expected_entropy",
                        "mutual_information",
                        "variation_ratio"}
DIMENSIONS = {"image", "class", "pass"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return exported_model(tmp_path_factory, "digits")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Digits in class folders, photographs, and bad files; (root, relative path -> status)."""
    root = tmp_path_factory.mktemp("mixed")
    expected = {p.relative_to(root).as_posix(): "ok" for p in write_digits(root)}
    expected.update({p.relative_to(root).as_posix(): "ok" for p in write_photos(root / "photos")})
    expected.update({f"bad/{name}": status for name, status in write_bad_files(root / "bad").items()})
    Image.new("L", (1200, 1200)).save(root / "bad" / "bomb.png")
    expected["bad/bomb.png"] = "too large"
    return root, expected


def run(root, out, model, **options):
    return score(root, out, model, ScoreOptions(**{"passes": PASSES, "max_pixels": MAX_PIXELS,
                                                    **options}))


@pytest.fixture(scope="module")
def scored(model, mixed, tmp_path_factory):
    """The mixed folder scored once with saved passes: (out path, summary)."""
    root, _ = mixed
    out = tmp_path_factory.mktemp("scored") / "out.h5"
    summary = run(root, out, model, save_passes=True, workers=2, seed=3, command="mcd-score test")
    return out, summary


# ---- one run, checked row by row -------------------------------------------------------------------


def test_rows_in_input_order_with_paths_labels_keys_and_status(mixed, scored):
    root, expected = mixed
    out, summary = scored
    data, _ = read_h5(out)
    order = sorted(expected)
    assert list(data["path"]) == order
    assert list(data["label"]) == [path.split("/")[0] for path in order]
    assert list(data["key"]) == [hashlib.sha256((root / p).read_bytes()).hexdigest() for p in order]
    assert list(data["status"]) == [expected[p] for p in order]
    assert summary.images == len(order)
    assert summary.failed == 4
    assert summary.failures == {"empty file": 1, "not an image": 1, "truncated": 1, "too large": 1}
    assert list(data["reason"] == "") == [expected[p] == "ok" for p in order]
    assert not parts_path(out).exists()


def test_failed_rows_have_nan_metrics(scored):
    data, _ = read_h5(scored[0])
    failed = data["status"] != "ok"
    assert failed.sum() == 4
    assert (data["predicted_class"][failed] == -1).all()
    for name in ("mean", "std", "confidence", "predictive_entropy", "expected_entropy",
                 "mutual_information", "variation_ratio", "passes"):
        assert np.isnan(data[name][failed]).all(), name
        assert np.isfinite(data[name][~failed]).all(), name
    assert ((data["predicted_class"][~failed] >= 0) & (data["predicted_class"][~failed] < 10)).all()


def test_schema_datasets_and_attributes(model, scored):
    out, _ = scored
    data, attrs = read_h5(out)
    assert set(data) == PROBABILITY_DATASETS | {"passes"} | DIMENSIONS
    n = len(data["path"])
    assert data["mean"].shape == data["std"].shape == (n, 10)
    assert data["passes"].shape == (n, PASSES, 10)
    assert attrs["schema_version"] == 2
    assert attrs["seed"] == 3
    assert attrs["passes"] == PASSES
    assert attrs["kind"] == "probabilities"
    assert list(data["class"]) == list(DIGIT_CLASSES)
    assert attrs["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(attrs["model_metadata"]) == json.loads(props["mcd_score"])
    assert attrs["execution_provider"] == "CPUExecutionProvider"
    versions = json.loads(attrs["versions"])
    assert versions["onnxruntime"] == ort.__version__
    assert versions["numpy"] == np.__version__
    assert versions["h5py"] == h5py.__version__
    assert {"mcd-score", "Pillow", "python"} <= set(versions)
    assert attrs["command"] == "mcd-score test"
    start = datetime.fromisoformat(attrs["start_time"])
    end = datetime.fromisoformat(attrs["end_time"])
    assert start <= end <= datetime.now(UTC)
    assert (datetime.now(UTC) - start).total_seconds() < 3600
    with h5py.File(out, "r") as file:
        for name in set(data) - DIMENSIONS:
            assert file[name].chunks is not None, name
            assert file[name].compression == "gzip", name


def test_metrics_equal_numpy_reference(scored):
    data, _ = read_h5(scored[0])
    ok = data["status"] == "ok"
    passes = data["passes"][ok].astype(np.float64)  # [N, T, C]
    # hand-written numpy reference
    mean = passes.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(passes > 0, passes * np.log(passes), 0.0)
        mlogm = np.where(mean > 0, mean * np.log(mean), 0.0)
    predictive = -mlogm.sum(axis=1)
    expected_entropy = -plogp.sum(axis=2).mean(axis=1)
    votes = np.stack([np.bincount(row, minlength=10) for row in passes.argmax(axis=2)])
    hand = {
        "mean": mean, "std": np.sqrt(((passes - mean[:, None, :]) ** 2).mean(axis=1)),
        "confidence": mean.max(axis=1), "predictive_entropy": predictive,
        "expected_entropy": expected_entropy,
        "mutual_information": np.clip(predictive - expected_entropy, 0, None),
        "variation_ratio": 1 - votes.max(axis=1) / PASSES,
    }
    for name, value in hand.items():
        np.testing.assert_allclose(data[name][ok], value, rtol=0, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(data["predicted_class"][ok], mean.argmax(axis=1))
    reference = metrics.summarize_passes(passes, "probabilities")
    for name, value in reference.items():
        np.testing.assert_allclose(data[name][ok], value, rtol=0, atol=1e-6, err_msg=name)
    assert (data["mutual_information"][ok] <= data["predictive_entropy"][ok] + 1e-6).all()
    assert (data["predictive_entropy"][ok] <= np.log(10) + 1e-6).all()


def test_passes_equal_a_direct_onnx_runtime_run(model, mixed, scored):
    """The digit PNGs are 16x16 already: pixels / 255 fed straight to ONNX Runtime, one at a time."""
    root, _ = mixed
    data, _ = read_h5(scored[0])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    checked = 0
    for row, path in enumerate(data["path"]):
        if not path.startswith("d"):
            continue
        pixels = np.asarray(Image.open(root / path), dtype=np.float32)[None, :, :, None] / 255.0
        feeds = {"images": pixels.astype(np.float32), "seed": np.array(3, np.int64),
                 "pass_start": np.array(0, np.int64), "pass_count": np.array(PASSES, np.int64)}
        (passes,) = session.run(["passes"], feeds)
        np.testing.assert_allclose(data["passes"][row], passes[0], rtol=0, atol=1e-6, err_msg=path)
        checked += 1
    assert checked == 6


# ---- invariances -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(model, mixed, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    run(mixed[0], out, model, batch_size=64, workers=0, save_passes=True)
    return out


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 0), (3, 2), (64, 2), (1, 2)])
def test_invariant_to_batch_size_and_workers(model, mixed, reference_run, tmp_path, batch_size, workers):
    out = tmp_path / "out.h5"
    run(mixed[0], out, model, batch_size=batch_size, workers=workers, save_passes=True)
    assert_close_results(reference_run, out)


EXACT = ("passes", "mean", "std", "confidence", "predicted_class", "variation_ratio")


def assert_close_results(reference: Path, other: Path, exact: tuple[str, ...] = EXACT) -> None:
    """The ``exact`` datasets and all strings bit-identical, the rest within 1e-6.

    The graph sums over passes with a MatMul whose order does not depend on the batch, so passes,
    mean, std and votes are exact; ONNX Runtime's vectorised ``Log`` can round an element
    differently depending on its position in the buffer, so ``entropy_sum`` (and the entropies and
    mutual information from it) may differ by about one float32 ulp.
    """
    first, second = read_h5(reference)[0], read_h5(other)[0]
    assert sorted(first) == sorted(second)
    for name in first:
        if first[name].dtype == object or name in exact:
            np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        else:
            np.testing.assert_allclose(first[name], second[name], rtol=0, atol=1e-6, err_msg=name)


def test_explicit_batch_size_is_split_to_fit_max_memory(model, mixed, reference_run, tmp_path):
    plans = []
    out = tmp_path / "split.h5"
    score(mixed[0], out, model,
          ScoreOptions(passes=PASSES, max_pixels=MAX_PIXELS, batch_size=64, max_memory_mb=16,
                       save_passes=True, workers=0),
          on_start=lambda started: plans.append(started.plan))
    (plan,) = plans
    meta = session_metadata(model)
    per_call = plan.call_images * (meta.bytes_per_image + plan.pass_chunk * meta.bytes_per_image_pass)
    assert plan.batch_size == 64 and plan.call_images < 64
    assert per_call <= 16 * 2**20
    if plan.pass_chunk == PASSES:  # same pass chunking as the reference run: bit-identical
        assert_close_results(reference_run, out)
    else:
        assert_close_results(reference_run, out, exact=("passes", "predicted_class", "variation_ratio"))


def session_metadata(model):
    from scorer.model.session import open_session

    return open_session(model, "cpu").metadata


def test_invariant_to_pass_chunking(model, mixed, tmp_path):
    plans = []
    for memory in (16, 2048):
        out = tmp_path / f"chunked-{memory}.h5"
        score(mixed[0], out, model,
              ScoreOptions(passes=200, max_pixels=MAX_PIXELS, max_memory_mb=memory, save_passes=True,
                           batch_size=4, workers=0),
              on_start=lambda started: plans.append(started.plan))
    small, large = plans
    assert len(small.chunks(200)) >= 2, small
    assert large.chunks(200) == [(0, 200)]
    assert [count for _, count in small.chunks(200)] == [small.pass_chunk] * (200 // small.pass_chunk) + (
        [200 % small.pass_chunk] if 200 % small.pass_chunk else [])
    # chunks are summed separately and merged in float64: equal within float32 rounding, not exact
    assert_close_results(tmp_path / "chunked-2048.h5", tmp_path / "chunked-16.h5",
                         exact=("passes", "predicted_class", "variation_ratio"))


def test_same_seed_same_file_different_seed_different(model, mixed, reference_run, tmp_path):
    again = tmp_path / "again.h5"
    run(mixed[0], again, model, batch_size=64, workers=0, save_passes=True)
    assert_same_datasets(reference_run, again)
    other = tmp_path / "other.h5"
    run(mixed[0], other, model, batch_size=64, workers=0, save_passes=True, seed=1)
    first, second = read_h5(reference_run)[0], read_h5(other)[0]
    ok = first["status"] == "ok"
    assert not np.array_equal(first["passes"][ok], second["passes"][ok])
    assert not np.allclose(first["mean"][ok], second["mean"][ok])
    assert list(first["key"]) == list(second["key"])


def test_linear_head_gives_only_mean_and_std(tmp_path_factory, tmp_path):
    model = exported_model(tmp_path_factory, "linear")
    root = tmp_path / "images"
    write_digits(root, per_class=2, classes=2)
    out = tmp_path / "values.h5"
    score(root, out, model, ScoreOptions(passes=30, save_passes=True))
    data, attrs = read_h5(out)
    assert set(data) == {"path", "key", "status", "reason", "label", "mean", "std", "passes",
                         "image", "output", "pass"}
    assert attrs["kind"] == "values"
    assert data["passes"].shape == (4, 30, 3)
    passes = data["passes"].astype(np.float64)
    np.testing.assert_allclose(data["mean"], passes.mean(axis=1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(data["std"], passes.std(axis=1), rtol=0, atol=1e-6)
    assert (data["std"] > 0).all()
    assert list(data["output"]) == ["0", "1", "2"]




# ---- interrupt and resume --------------------------------------------------------------------------


def committed_rows(out: Path) -> int:
    """Rows committed to OUT.parts/ by a run in progress (another process may be writing)."""
    from scorer.rundir.segments import committed, rows_in

    return rows_in(committed(parts_path(out) / "shard-00000"))


def test_sigterm_exits_130_keeping_the_rows_and_resume_equals_uninterrupted(model, tmp_path):
    root = tmp_path / "many"
    write_flat_digits(root, 240)
    out = tmp_path / "out.h5"
    args = [str(root), str(out), "--model", str(model), "--passes", "1500", "--seed", "5",
            "--batch-size", "4", "--workers", "0"]
    executable = Path(sys.executable).parent / "mcd-score"
    process = subprocess.Popen([str(executable), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert "240 images" in process.stderr.readline()  # the run has started (about 1.5 s)
        time.sleep(0.4)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and not out.exists()
    done = committed_rows(out)
    assert 0 < done < 240, "SIGTERM commits the rows scored so far"
    result = CliRunner().invoke(main, [*args, "--resume", "--json-summary"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["resumed"], summary["images"]) == (done, 240)
    assert not parts_path(out).exists()
    reference = tmp_path / "reference.h5"
    score(root, reference, model, ScoreOptions(passes=1500, seed=5, batch_size=4, workers=0))
    assert_same_datasets(reference, out)


def test_sigterm_in_process_with_decode_threads(model, tmp_path):
    """SIGTERM while worker threads decode: ScoreInterrupted, committed rows, handler restored."""
    root = tmp_path / "images"
    write_digits(root, per_class=4, classes=3)
    out = tmp_path / "out.h5"
    before = signal.getsignal(signal.SIGTERM)

    def progress(done, total, failed):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs (and raises) here

    with pytest.raises(ScoreInterrupted, match="interrupted after 2 of 12 images"):
        score(root, out, model, ScoreOptions(passes=5, batch_size=2, workers=2), progress=progress)
    assert signal.getsignal(signal.SIGTERM) is before
    assert committed_rows(out) == 2
    summary = score(root, out, model, ScoreOptions(passes=5, batch_size=2, workers=2, mode="resume"))
    assert (summary.resumed, summary.scored, summary.failed) == (2, 10, 0)
    whole = tmp_path / "whole.h5"
    score(root, whole, model, ScoreOptions(passes=5, batch_size=2, workers=2))
    assert_same_datasets(whole, out)


def interrupted_run(root: Path, out: Path, model: Path, **options) -> None:
    """Interrupt a run after its first batch, as Ctrl-C would."""
    def progress(done, total, failed):
        raise KeyboardInterrupt

    with pytest.raises(ScoreInterrupted, match="--resume"):
        score(root, out, model, ScoreOptions(**{"passes": 5, "batch_size": 2, "workers": 0, **options}),
              progress=progress)
    assert committed_rows(out) == 2
    assert not out.exists()


def test_resume_refuses_a_changed_folder(model, tmp_path):
    root = tmp_path / "images"
    write_digits(root)
    out = tmp_path / "out.h5"
    interrupted_run(root, out, model)
    write_digits(tmp_path / "images" / "a0", per_class=1, classes=1)  # sorts before d0/
    with pytest.raises(OutputError, match="different settings or inputs") as info:
        score(root, out, model, ScoreOptions(passes=5, batch_size=2, workers=0, mode="resume"))
    assert "inputs_sha256" in str(info.value) and "--overwrite" in str(info.value)


def test_resume_reads_the_spot_checked_files_with_the_run_s_size_limit(model, tmp_path,
                                                                      monkeypatch):
    """The spot check read files with the default --max-file-size: a file over 256 MB scored
    under a larger limit made --resume fail with 'changed since the interrupted run'."""
    import scorer.scoring

    root = tmp_path / "images"
    write_digits(root)
    out = tmp_path / "out.h5"
    interrupted_run(root, out, model, max_file_mb=300)
    limits = []
    read = scorer.scoring.read_file
    monkeypatch.setattr(scorer.scoring, "read_file",
                        lambda ref, *limit: limits.append(limit) or read(ref, *limit))
    score(root, out, model, ScoreOptions(passes=5, batch_size=2, workers=0, mode="resume",
                                         max_file_mb=300))
    assert limits and set(limits) == {(300 << 20,)}


def test_resume_refuses_a_replaced_image(model, tmp_path):
    root = tmp_path / "images"
    write_digits(root)
    out = tmp_path / "out.h5"
    interrupted_run(root, out, model)
    first = sorted(p for p in root.rglob("*.png"))[0]
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(first)  # same name, other bytes
    with pytest.raises(OutputError, match="changed since the interrupted run") as info:
        score(root, out, model, ScoreOptions(passes=5, batch_size=2, workers=0, mode="resume"))
    assert first.name in str(info.value) and "--overwrite" in str(info.value)


@pytest.mark.parametrize(("changed", "attribute"), [
    (["--seed", "2"], "seed"), (["--no-draft"], "jpeg_draft"), (["--max-pixels", "1000"], "max_pixels"),
    (["--max-memory", "16", "--passes", "400"], "pass_chunk")])
def test_resume_refuses_settings_that_change_results(model, tmp_path, changed, attribute):
    """JPEG draft decoding, the pixel limit, the seed and the pass chunking (set by --max-memory)
    change rows, so a resume that changes any of them, --max-memory included, is refused."""
    root = tmp_path / "images"
    write_digits(root, per_class=1, classes=2)
    write_photos(root / "photos")
    out = tmp_path / "out.h5"
    passes = "400" if attribute == "pass_chunk" else "5"
    interrupted_run(root, out, model, passes=int(passes))
    base = [str(root), str(out), "--model", str(model), "--passes", passes, "--batch-size", "2",
            "--resume"]
    result = CliRunner().invoke(main, [*base, *changed])
    assert result.exit_code == 2, result.output
    assert "different settings" in result.output and f"{attribute}:" in result.output
    result = CliRunner().invoke(main, base)  # the same settings do resume
    assert result.exit_code == 0, result.output
    assert "(2 resumed)" in result.output


def test_a_schema_1_partial_resumes_into_the_same_results(tmp_path):
    """An interrupted run of mcd-score 0.1 (schema 1, OUT.partial) is continued by --resume."""
    data = DATA
    out = tmp_path / "out.h5"
    shutil.copy(data / "v1" / "partial.h5", tmp_path / "out.h5.partial")
    summary = score(data / "regression" / "images", out, data / "regression" / "model.onnx",
                    ScoreOptions(passes=30, seed=7, mode="resume", device="cpu"))
    assert (summary.resumed, summary.images) == (8, 15)
    assert not (tmp_path / "out.h5.partial").exists() and not parts_path(out).exists()
    fresh = tmp_path / "fresh.h5"
    score(data / "regression" / "images", fresh, data / "regression" / "model.onnx",
          ScoreOptions(passes=30, seed=7, device="cpu"))
    assert_same_datasets(fresh, out)
    # against the uninterrupted schema-1 run: the same numbers; only the truncated JPEG's status
    # is new ('truncated', was 'decode error' in 0.1)
    from scorer.results.compare import compare_results

    comparison = compare_results(data / "v1" / "complete.h5", out, atol=0, rtol=0)
    assert [m.max_abs_diff for m in comparison.metrics] == [0.0] * len(comparison.metrics)
    changed = {e.name: e.examples for e in comparison.exact if e.rows_changed}
    assert changed == {"status": [("other/broken.jpg", "decode error", "truncated")]}


def test_a_schema_1_partial_without_its_row_count_starts_over(tmp_path):
    """A schema-1 partial missing its completion attribute starts over, with nothing resumed."""
    data = DATA
    shutil.copy(data / "v1" / "partial.h5", tmp_path / "out.h5.partial")
    with h5py.File(tmp_path / "out.h5.partial", "a") as file:
        del file.attrs["rows_complete"]
    summary = score(data / "regression" / "images", tmp_path / "out.h5",
                    data / "regression" / "model.onnx",
                    ScoreOptions(passes=30, seed=7, mode="resume", device="cpu"))
    assert (summary.resumed, summary.images) == (0, 15)


def test_draft_decoding_is_recorded_and_changes_photo_rows(model, mixed, tmp_path):
    results = {}
    for draft in (True, False):
        out = tmp_path / f"draft-{draft}.h5"
        run(mixed[0], out, model, draft=draft, save_passes=True)
        results[draft] = read_h5(out)
        assert results[draft][1]["jpeg_draft"] == draft
        assert results[draft][1]["max_pixels"] == MAX_PIXELS
    (with_draft, _), (without, _) = results[True], results[False]
    photos = np.char.startswith(with_draft["path"].astype(str), "photos/")
    assert not np.array_equal(with_draft["passes"][photos], without["passes"][photos])
    np.testing.assert_array_equal(with_draft["passes"][~photos], without["passes"][~photos])


def test_non_finite_outputs_are_failed_rows(tmp_path):
    """NaN from the model makes a ``non-finite output`` failed row, not a result with status ok."""
    model = tmp_path / "sqrt.onnx"
    sqrt_values_graph(model)
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(root / "bright.png")  # sqrt(200/255 - 0.5)
    Image.fromarray(np.full((4, 4), 10, np.uint8)).save(root / "dark.png")  # sqrt(negative) = NaN
    out = tmp_path / "out.h5"
    summary = score(root, out, model, ScoreOptions(passes=3))
    data, _ = read_h5(out)
    assert list(data["path"]) == ["bright.png", "dark.png"]
    assert list(data["status"]) == ["ok", "non-finite output"]
    assert "NaN" in data["reason"][1]
    np.testing.assert_allclose(data["mean"][0], np.sqrt(200 / 255 - 0.5), rtol=1e-6)
    assert np.isnan(data["mean"][1]).all() and summary.failures == {"non-finite output": 1}


# ---- usage errors ----------------------------------------------------------------------------------


def test_existing_output_needs_overwrite_or_resume(model, tmp_path):
    root = tmp_path / "images"
    write_digits(root, per_class=1, classes=2)
    out = tmp_path / "out.h5"
    run(root, out, model)
    before = out.read_bytes()
    with pytest.raises(ScorerUsageError, match="already exists"):
        run(root, out, model)
    result = CliRunner().invoke(main, [str(root), str(out), "--model", str(model)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert out.read_bytes() == before
    result = CliRunner().invoke(main, [str(root), str(out), "--model", str(model), "--overwrite",
                                       "--passes", "3"])
    assert result.exit_code == 0, result.output
    assert read_h5(out)[1]["passes"] == 3


def test_an_existing_output_is_refused_before_anything_starts(model, tmp_path, monkeypatch):
    """No folder listing, no decode process, no merge child, no model loaded: the answer comes
    first, in well under a second."""
    import scorer.scoring

    out = tmp_path / "out.h5"
    out.write_bytes(b"a finished results file")
    started: list[str] = []
    for name in ("discover", "start_processes", "prestart", "open_session"):
        monkeypatch.setattr(scorer.scoring, name, lambda *a, name=name, **k: started.append(name))
    clock = time.monotonic()
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        score(tmp_path / "images", out, model, ScoreOptions())
    assert time.monotonic() - clock < 0.1 and started == []
    assert not parts_path(out).exists()


@pytest.mark.parametrize("name, flag", [("max_file_mb", "--max-file-size"),
                                        ("max_image_mb", "--max-image-memory"),
                                        ("max_memory_mb", "--max-memory"),
                                        ("batch_size", "--batch-size")])
def test_option_errors_name_the_command_line_flag(name, flag):
    with pytest.raises(ScorerUsageError, match=f"^{flag} must be at least"):
        ScoreOptions(**{name: 0}).check()


@pytest.mark.parametrize("case", ["empty", "missing"])
def test_empty_or_missing_folder_is_a_usage_error(model, tmp_path, case):
    root = tmp_path / "images"
    if case == "empty":
        root.mkdir()
        (root / ".hidden").write_text("x", encoding="utf-8")
    result = CliRunner().invoke(main, [str(root), str(tmp_path / "out.h5"), "--model", str(model)])
    assert result.exit_code == 2, result.output
    assert ("holds no files" if case == "empty" else "does not exist") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == (["images"] if case == "empty" else [])


def test_a_file_name_that_is_not_utf8_is_scored_resumed_and_kept_byte_exact(model, tmp_path):
    """Such a name is written at the flush, survives --resume, and reads back byte for byte, the
    results the same as an uninterrupted run's."""
    root = tmp_path / "images"
    write_digits(root, per_class=2, classes=2)
    raw = os.path.join(os.fsencode(root / "d0"), b"caf\xe9-\xff.png")
    with open(raw, "wb") as stream:
        stream.write((root / "d0" / "0000.png").read_bytes())
    out = tmp_path / "out.h5"
    interrupted_run(root, out, model)
    score(root, out, model, ScoreOptions(passes=5, batch_size=2, workers=0, mode="resume"))
    from scorer.results.reader import read_arrays

    paths = list(read_arrays(out)[0]["path"])
    assert os.fsdecode(b"d0/caf\xe9-\xff.png") in paths
    assert [p.encode("utf-8", "surrogateescape") for p in paths if "caf" in p] == [b"d0/caf\xe9-\xff.png"]
    whole = tmp_path / "whole.h5"
    score(root, whole, model, ScoreOptions(passes=5, batch_size=2, workers=0))
    assert_same_datasets(whole, out)
