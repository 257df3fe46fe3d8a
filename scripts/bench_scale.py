"""Benchmark at scale: time and memory against the number of images.

For each size (default 10,000 and 100,000; add 1,000,000 with ``--sizes``): a folder of that many
16x16 PNG files in 100 class folders (made once under ``--work``, reused), scored end to end by
``mcd-score`` with the regression model (``tests/data/regression/model.onnx``, T=20) in a fresh
process. Printed per size: images/s, the time of each phase (listing, start-up until the first
batch, scoring, the final merge), the peak memory of the whole process tree (main process, decode
workers, the merge child: the sum of their proportional set sizes, sampled every 50 ms), and the
bytes per input between sizes. Then a file list of ``--list-lines`` lines (10,000,000 by default)
read as ``--files-from`` would and hashed into the run identity, with its peak memory and bytes
per line.

Usage: python scripts/bench_scale.py [--sizes 10000,100000,1000000] [--list-lines 10000000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import tree_pss
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "regression" / "model.onnx"
PASSES = 20

RUN = """
import json, sys, time
from pathlib import Path
import scorer.rundir.folder as folder
import scorer.scoring as scoring
from scorer.images.listing import discover
from scorer.scoring import ScoreOptions, score
times = {"start": time.monotonic()}
real_discover, real_finish = scoring.discover, folder.RunDir.finish
def timed_discover(root):
    refs = real_discover(root)
    times["listed"] = time.monotonic()
    return refs
def timed_finish(self, *a, **k):
    times["merge_start"] = time.monotonic()
    try:
        return real_finish(self, *a, **k)
    finally:
        times["merge_end"] = time.monotonic()
scoring.discover, folder.RunDir.finish = timed_discover, timed_finish
def started(_):
    times["first_batch"] = time.monotonic()
summary = score(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                ScoreOptions(passes=int(sys.argv[4]), device="cpu", mode="overwrite"),
                on_start=started)
times["end"] = time.monotonic()
print(json.dumps({"times": times, "images": summary.images}))
"""

LIST = """
import resource, sys, time
from pathlib import Path
from scorer.images.listing import read_file_list
from scorer.scoring import inputs_digest
start = time.monotonic()
with open(sys.argv[1], "rb") as file:
    refs = read_file_list(file, Path("/data/images"))
read = time.monotonic()
inputs_digest(refs)
print(len(refs), read - start, time.monotonic() - read, refs.nbytes(),
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_folder(folder: Path, count: int) -> Path:
    """``count`` 16x16 PNGs in 100 class folders, made once."""
    done = folder / ".complete"
    if done.exists():
        return folder
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    for c in range(100):
        (folder / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"class{i % 100:03d}" / f"image_{i:08d}.png").write_bytes(data)
    done.touch()
    return folder


def measured(command: list[str]) -> tuple[str, int]:
    """Run ``command``; its stdout and the peak PSS (bytes) of its process tree."""
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, env={**os.environ,
                                                             "PYTHONPATH": str(ROOT)})
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_pss(process.pid))
            time.sleep(0.05)
        out.seek(0)
        text = out.read()
    if process.returncode not in (0, 3):
        raise RuntimeError(f"{command[:3]} failed with exit code {process.returncode}")
    return text, peak * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--list-lines", type=int, default=10_000_000)
    parser.add_argument("--passes", type=int, default=PASSES)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_scale")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        folder = make_folder(args.work / f"images-{size}", size)
        text, peak = measured([sys.executable, "-c", RUN, str(folder),
                               str(args.work / f"out-{size}.h5"), str(MODEL), str(args.passes)])
        result = json.loads(text.strip().splitlines()[-1])
        t = result["times"]
        total = t["end"] - t["start"]
        rows.append({"images": size, "seconds": total, "images_per_s": size / total,
                     "listing": t["listed"] - t["start"], "start_up": t["first_batch"] - t["start"],
                     "merge": t["merge_end"] - t["merge_start"], "peak_bytes": peak})
        row = rows[-1]
        print(f"{size:>10,} images: {row['images_per_s']:8.0f} images/s in {total:7.1f} s; "
              f"listing {row['listing']:.2f} s, start-up {row['start_up']:.2f} s, merge "
              f"{row['merge']:.2f} s; peak {peak / 2**20:7.1f} MiB", flush=True)
    for small, large in zip(rows, rows[1:], strict=False):
        per_input = (large["peak_bytes"] - small["peak_bytes"]) / (large["images"] - small["images"])
        rate = large["images_per_s"] / small["images_per_s"]
        print(f"{small['images']:,} -> {large['images']:,}: {per_input:.0f} bytes per input, rate "
              f"ratio {rate:.2f}")
    listing = args.work / f"list-{args.list_lines}.txt"
    if not listing.exists():
        with listing.open("w") as file:
            for i in range(args.list_lines):
                file.write(f"shard{i % 1000:04d}/image_{i:09d}.jpg\n")
    text, peak = measured([sys.executable, "-c", LIST, str(listing)])
    lines, read, digest, nbytes, _ = text.split()
    print(f"--files-from {int(lines):,} lines: read {float(read):.1f} s, digest {float(digest):.1f} "
          f"s, index {int(nbytes) / int(lines):.0f} bytes per input, peak {peak / 2**20:.0f} MiB "
          f"({peak / int(lines):.0f} bytes per line, the interpreter included)")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "list": {
            "lines": int(lines), "read_s": float(read), "digest_s": float(digest),
            "peak_bytes": peak}}, indent=1))


if __name__ == "__main__":
    main()
