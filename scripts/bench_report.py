"""Benchmark ``mcd-score report`` on large synthetic results files: wall time and peak memory.

Writes synthetic probabilities results files (C classes, labels in class folders, 5% ``ood``
rows, 1% failed rows; gzip-chunked like the scorer's) of 100,000 and 1,000,000 rows, then writes
each one's report (HTML with figures and JSON summary) in a fresh process and prints its wall time
and peak memory (VmHWM). The ratio of the peaks shows how memory grows with the row count.

Usage: python scripts/bench_report.py [--rows 100000 1000000] [--classes 10] [--dir /tmp/bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

CHUNK = 100_000


def write_synthetic(path: Path, rows: int, classes: int, seed: int = 0) -> None:
    """A results file of ``rows`` rows, written in slices of ``CHUNK`` rows."""
    rng = np.random.default_rng(seed)
    names = [str(c) for c in range(classes)]
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as file:
        def dataset(name: str, dtype, width: int | None = None):
            shape = (rows,) if width is None else (rows, width)
            chunks = (min(rows, 65536),) if width is None else (min(rows, 16384), width)
            return file.create_dataset(name, shape, dtype=dtype, chunks=chunks, compression="gzip",
                                       compression_opts=4)

        columns = {name: dataset(name, text) for name in ("path", "key", "status", "label")}
        for name in ("mean", "std"):
            columns[name] = dataset(name, np.float32, classes)
        columns["predicted_class"] = dataset("predicted_class", np.int64)
        for name in ("confidence", "predictive_entropy", "expected_entropy", "mutual_information",
                     "variation_ratio"):
            columns[name] = dataset(name, np.float32)
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            truth = rng.integers(0, classes, n)
            ood = rng.random(n) < 0.05
            noise = np.where(ood, 2.5, rng.uniform(0.2, 1.5, n))
            logits = rng.normal(0, 1, (n, classes)) * noise[:, None]
            logits[np.arange(n), truth] += 3.0
            mean = np.exp(logits - logits.max(axis=1, keepdims=True))
            mean /= mean.sum(axis=1, keepdims=True)
            entropy = -np.sum(mean * np.log(np.maximum(mean, 1e-30)), axis=1)
            mi = entropy * rng.uniform(0.05, 0.4, n) * noise
            failed = rng.random(n) < 0.01
            values = {"mean": mean, "std": mean * (1 - mean) * rng.uniform(0.1, 1.0, (n, 1)) * noise[:, None],
                      "predicted_class": mean.argmax(axis=1), "confidence": mean.max(axis=1),
                      "predictive_entropy": entropy, "mutual_information": np.minimum(mi, entropy),
                      "expected_entropy": entropy - np.minimum(mi, entropy),
                      "variation_ratio": np.round(np.minimum(mi, 0.98) * 50) / 50}
            for name, array in values.items():
                array = array.astype(columns[name].dtype)
                if name == "predicted_class":
                    array[failed] = -1
                else:
                    array[failed] = np.nan
                columns[name][start:start + n] = array
            label = np.where(ood, "ood", np.array(names)[truth])
            columns["label"][start:start + n] = label.tolist()
            columns["path"][start:start + n] = [f"{lab}/{start + i:07d}.jpg" for i, lab in enumerate(label)]
            columns["key"][start:start + n] = [""] * n
            columns["status"][start:start + n] = np.where(failed, "truncated", "ok").tolist()
        file.attrs.update({"schema_version": 1, "kind": "probabilities", "num_outputs": classes,
                           "passes": 50, "has_labels": True, "rows_complete": rows,
                           "class_names": json.dumps(names), "images_root": ""})


CHILD = """
import json, sys, time
from pathlib import Path
from scorer.report import ReportOptions, write_report
start = time.perf_counter()
summary = write_report(Path(sys.argv[1]), Path(sys.argv[2]),
                       ReportOptions(ood_labels=("ood",), json_summary=Path(sys.argv[3])))
seconds = time.perf_counter() - start
status = Path("/proc/self/status").read_text()
peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
print(json.dumps({"seconds": seconds, "peak_kib": peak,
                  "mi_auroc": summary.numbers["ood"]["measures"]["mutual_information"]["auroc"]}))
"""


def measure(results: Path) -> dict:
    """Write the report of ``results`` in a fresh interpreter; its time and peak memory."""
    html, summary = results.with_suffix(".html"), results.with_suffix(".json")
    done = subprocess.run([sys.executable, "-c", CHILD, str(results), str(html), str(summary)],
                          check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["html_bytes"] = html.stat().st_size
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mcd-report-bench"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    baseline = measure_startup()
    print(f"python + scorer.report import, no work: peak {baseline / 1024:.0f} MiB")
    print(f"{'rows':>10s} {'file MiB':>9s} {'write s':>8s} {'report s':>9s} {'peak MiB':>9s} "
          f"{'html KiB':>9s}")
    peaks = []
    for rows in args.rows:
        path = args.dir / f"synthetic_{rows}.h5"
        start = time.perf_counter()
        write_synthetic(path, rows, args.classes)
        written = time.perf_counter() - start
        result = measure(path)
        peaks.append(result["peak_kib"])
        print(f"{rows:10,d} {path.stat().st_size / 2**20:9.1f} {written:8.1f} {result['seconds']:9.1f} "
              f"{result['peak_kib'] / 1024:9.0f} {result['html_bytes'] / 1024:9.0f}", flush=True)
    if len(peaks) > 1:
        growth = (peaks[-1] - peaks[0]) / 1024 / ((args.rows[-1] - args.rows[0]) / 1e6)
        print(f"peak memory grows by {growth:.0f} MiB per million rows "
              f"(ratio {peaks[-1] / peaks[0]:.2f} for {args.rows[-1] / args.rows[0]:.0f}x the rows)")
    return 0


def measure_startup() -> int:
    """Peak memory (KiB) of a fresh interpreter that imports the report and matplotlib."""
    code = ("import scorer.report, matplotlib.figure\nfrom pathlib import Path\n"
            "s = Path('/proc/self/status').read_text()\n"
            "print(next(l.split()[1] for l in s.splitlines() if l.startswith('VmHWM')))")
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True).stdout.strip())


if __name__ == "__main__":
    sys.exit(main())
