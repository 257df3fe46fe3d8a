"""Benchmark the results stage at scale: the final merge and every reader on a 10-million-row file.

A results file of ``--rows`` rows (10,000,000 by default; a labelled 10-class run with paths of
the shape ``class007/image_00000042.png``) is written the way a run writes it: segments, then the
final merge in its child process. Then, each in a fresh process: ``read_results`` in chunks,
``mcd-score table`` as CSV without and with ``--sort --top``, ``mcd-score report`` and
``mcd-score compare`` against a copy of the file (the same paths in the same order), and
``compare`` of two ``--permuted-rows`` files that hold the same rows in opposite orders.
Printed: seconds, the peak memory of the process tree (proportional set size, sampled every 50
ms) and that peak in bytes per row. Files are made once under ``--work`` and reused.

Usage: python scripts/bench_results.py [--rows 10000000] [--permuted-rows 1000000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import tree_pss

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
BLOCK = 100_000
METRICS = ("predictive_entropy", "normalized_entropy", "expected_entropy", "mutual_information",
           "variation_ratio")

READ = """
import sys
from scorer.results.reader import read_results
total = 0.0
for frame in read_results(sys.argv[1], chunk_rows=65536):
    total += float(frame["mutual_information"].sum())
print(total)
"""


def make_segments(folder: Path, rows: int, reverse: bool) -> list:
    """Segments of ``rows`` synthetic rows (in reverse path order with ``reverse``)."""
    from scorer.rundir.segments import SegmentWriter, committed

    folder.mkdir(parents=True)
    writer = SegmentWriter(folder, 0, flush_seconds=1e9, buffer_bytes=1 << 62)
    names = [f"k{c}" for c in range(CLASSES)]
    for start in range(0, rows, BLOCK):
        count = min(rows, start + BLOCK) - start
        images = np.arange(start, start + count)
        if reverse:
            images = rows - 1 - images
        # values are functions of the image number, so a file in another order holds the same rows
        logits = 3 * np.sin(np.outer(images, np.arange(1, CLASSES + 1)) * 0.618).astype(np.float32)
        mean = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        columns = {"path": [f"class{i % 100:03d}/image_{i:08d}.png" for i in images],
                   "key": [f"{i:064x}" for i in images], "status": ["ok"] * count,
                   "reason": [""] * count, "label": [names[i % CLASSES] for i in images],
                   "mean": mean, "std": mean / 5, "predicted_class": mean.argmax(axis=1),
                   "confidence": mean.max(axis=1)}
        columns |= {name: ((images * (k + 1) * 0.618034) % 1).astype(np.float32)
                    for k, name in enumerate(METRICS)}
        writer.append(columns, count)
        writer.flush()
    return committed(folder)


def make_results(path: Path, rows: int, reverse: bool = False) -> dict:
    """Write ``path`` (once) through the real merge child; its time and peak memory."""
    stats = path.with_suffix(".json")
    if path.exists() and stats.exists():
        return json.loads(stats.read_text())
    segments_folder = path.with_suffix(".parts")
    shutil.rmtree(segments_folder, ignore_errors=True)
    segments = make_segments(segments_folder, rows, reverse)
    header = {"kind": "probabilities", "num_outputs": CLASSES, "passes": 50, "seed": 0,
              "save_passes": False, "has_labels": True,
              "class_names": [f"k{c}" for c in range(CLASSES)],
              "attrs": {"model_sha256": "0" * 64, "model": "synthetic"}}
    payload = {"mode": "segments", "path": str(path), "header": header,
               "segments": [[s.start, s.stop, str(s.path)] for s in segments]}
    seconds, peak, _ = measured([sys.executable, "-m", "scorer.rundir.merge"], json.dumps(payload))
    shutil.rmtree(segments_folder)
    result = {"seconds": seconds, "peak_bytes": peak}
    stats.write_text(json.dumps(result))
    return result


def measured(command: list[str], stdin: str | None = None) -> tuple[float, int, str]:
    """Run ``command``: seconds, peak PSS of its process tree (bytes), stdout."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.monotonic()
        process = subprocess.Popen(command, stdin=subprocess.PIPE if stdin else None, stdout=out,
                                   text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if stdin:
            process.stdin.write(stdin)
            process.stdin.close()
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_pss(process.pid))
            time.sleep(0.05)
        seconds = time.monotonic() - start
        out.seek(0)
        text = out.read()
    if process.returncode not in (0, 1):  # compare exits 1 when the files differ
        raise RuntimeError(f"{command[:4]} failed with exit code {process.returncode}")
    return seconds, peak * 1024, text


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "from scorer.cli.main import main; main()", *arguments]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--permuted-rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_results")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"results-{args.rows}.h5"
    merge = make_results(path, args.rows)
    copy = args.work / f"copy-{args.rows}.h5"
    if not copy.exists():
        shutil.copyfile(path, copy)
    forward = args.work / f"forward-{args.permuted_rows}.h5"
    backward = args.work / f"backward-{args.permuted_rows}.h5"
    make_results(forward, args.permuted_rows)
    make_results(backward, args.permuted_rows, reverse=True)
    rows = args.rows
    steps = [
        ("final merge (segments -> file)", rows, None),
        ("read_results, chunks of 65,536", rows, [sys.executable, "-c", READ, str(path)]),
        ("table --csv (no --sort)", rows, cli("table", str(path), "--csv", os.devnull)),
        ("table --sort MI --top 20", rows, cli("table", str(path), "--sort", "mutual_information",
                                               "--top", "20", "--csv", os.devnull)),
        ("report", rows, cli("report", str(path), str(args.work / "report.html"))),
        ("compare, same order", rows, cli("compare", str(path), str(copy))),
        ("compare, reversed order", args.permuted_rows, cli("compare", str(forward), str(backward))),
    ]
    results = []
    print(f"{'step':<34}{'rows':>12}{'seconds':>10}{'peak MiB':>10}{'bytes/row':>11}")
    for name, count, command in steps:
        if command is None:
            seconds, peak = merge["seconds"], merge["peak_bytes"]
        else:
            seconds, peak, _ = measured(command)
        results.append({"step": name, "rows": count, "seconds": seconds, "peak_bytes": peak})
        print(f"{name:<34}{count:>12,}{seconds:>10.1f}{peak / 2**20:>10.0f}{peak / count:>11.1f}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
