"""Kill mcd-score with SIGKILL at random moments, resume, and check the result equals a clean run.

Each trial starts ``mcd-score`` on a folder of images (every other trial with ``--save-passes``),
kills it with SIGKILL at a random moment of its run (start-up, scoring, committing a segment,
merging the final file, cleaning up), then runs it again with ``--resume`` until it completes,
and compares every dataset of the result with a clean, uninterrupted run: bit for bit.

    python scripts/fault_injection.py --trials 100            # about 5 minutes on 2 cores
    python scripts/fault_injection.py --trials 4 --images 60  # what CI runs

Prints ``N kills, N resumed, N identical to a clean run`` and exits 1 unless all are identical.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "data" / "regression" / "model.onnx"  # 16x16 grayscale digits CNN
MCD_SCORE = Path(sys.executable).parent / "mcd-score"


def write_images(folder: Path, count: int) -> None:
    """``count`` 16x16 grayscale PNGs in three class folders, plus one broken file."""
    rng = np.random.default_rng(0)
    for i in range(count):
        label = folder / f"c{i % 3}"
        label.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(label / f"{i:05d}.png")
    (folder / "c0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def command(images: Path, out: Path, save_passes: bool, passes: int, *extra: str) -> list[str]:
    return [str(MCD_SCORE), str(images), str(out), "--model", str(MODEL), "--passes", str(passes),
            "--seed", "3", "--batch-size", "8", "--commit-every", "0.05", "-q",
            *(["--save-passes"] if save_passes else []), *extra]


def datasets(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as file:
        return {name: file[name][()] for name in file}


def identical(first: Path, second: Path) -> bool:
    a, b = datasets(first), datasets(second)
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")
                                        for k in a)


def started(process: subprocess.Popen, out: Path) -> float:
    """Wait until the run has locked its output and written job.json; return the time it took."""
    begin = time.monotonic()
    while not (out.parent / f"{out.name}.parts" / "job.json").exists() and process.poll() is None:
        time.sleep(0.002)
    return time.monotonic() - begin


def phase(out: Path) -> str:
    """Where a killed run was: from what it left on disk."""
    parts = out.parent / f"{out.name}.parts"
    if out.exists():
        return "after the final rename"
    if (parts / "final.h5.tmp").exists():
        return "merging the final file"
    committed = list(parts.glob("shard-*/*.npz"))
    return f"scoring ({'some' if committed else 'no'} rows committed)" if parts.exists() else "start-up"


def trial(images: Path, work: Path, reference: Path, save_passes: bool, passes: int,
          scoring: float, rng: random.Random, phases: dict[str, int]) -> tuple[bool, int, bool]:
    """One kill at a random moment after start-up, and the resumes after it."""
    out = work / "out.h5"
    process = subprocess.Popen(command(images, out, save_passes, passes), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    started(process, out)
    time.sleep(rng.uniform(0.0, scoring * 1.1))
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    if killed:
        where = phase(out)
        phases[where] = phases.get(where, 0) + 1
    try:
        resumes = 0
        while True:
            resumes += 1
            done = subprocess.run(command(images, out, save_passes, passes, "--resume"),
                                  capture_output=True, text=True)
            if done.returncode in (0, 3) or "already complete" in done.stderr:
                break
            if resumes > 3:
                print(f"resume failed: {done.returncode} {done.stderr.strip()}", file=sys.stderr)
                return killed, resumes, False
        return killed, resumes, out.exists() and identical(reference, out)
    finally:
        shutil.rmtree(work)
        work.mkdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--passes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="mcd-faults-") as temporary:
        base = Path(temporary)
        images, work = base / "images", base / "work"
        write_images(images, args.images)
        work.mkdir()
        references, durations = {}, {}
        for save_passes in (False, True):
            references[save_passes] = base / f"reference-{save_passes}.h5"
            process = subprocess.Popen(command(images, references[save_passes], save_passes,
                                               args.passes))
            start_up = started(process, references[save_passes])
            begin = time.monotonic()
            process.wait()
            durations[save_passes] = time.monotonic() - begin
        kills = resumed = same = 0
        phases: dict[str, int] = {}
        for i in range(args.trials):
            save_passes = bool(i % 2)
            killed, resumes, ok = trial(images, work, references[save_passes], save_passes,
                                        args.passes, durations[save_passes], rng, phases)
            kills += killed
            resumed += resumes
            same += ok
            if not ok:
                print(f"trial {i} (save_passes={save_passes}): result differs from the clean run",
                      file=sys.stderr)
    print(f"kills by phase: {', '.join(f'{n} {where}' for where, n in sorted(phases.items()))}")
    print(f"{kills} kills, {resumed} resumed, {same} identical to a clean run "
          f"({args.trials} trials, {args.images} images, start-up {start_up:.1f} s, scoring "
          f"{durations[False]:.1f} s, {durations[True]:.1f} s with --save-passes)")
    return 0 if same == args.trials else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
