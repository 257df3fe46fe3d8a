"""Benchmark: MC dropout throughput of mcd-score against the anchors, measured in one run.

For each model (T passes per image), images per second of:
  (a) keras-loop     the usual recipe: ``model(x, training=True)`` in a Python loop, T calls
  (b) ort-naive      ONNX Runtime, T single-pass calls of the converted graph with numpy masks
  (c) ort-replicate  ONNX Runtime, the input tiled T times in one batch (``--trunk input`` graph)
  (d) ort-single     one deterministic ONNX Runtime pass (dropout off): the physical limit
  (e) mcd-model      mcd-score's graph and run loop on decoded arrays (trunk cached, stats in-graph)
  (f) mcd-e2e        mcd-score end to end: JPEG files on disk -> decode -> ONNX -> HDF5
and peak memory (VmHWM) of (f) for N and 10*N images, each in a fresh process.

Usage: python scripts/bench.py [--passes 50] [--images 128] [--models mnist,cnn,mobilenet]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
from digits import dropout_cnn  # noqa: E402
from PIL import Image  # noqa: E402

# images per model relative to --images: enough that start-up (session, file creation) is a small
# part of the end-to-end time of the fast models, few enough that the slow ones finish.
IMAGE_SCALE = {"mnist": 8, "cnn": 1, "mobilenet": 2}
E2E_IMAGES = {"mnist": 8192, "cnn": 256, "mobilenet": 1024}


def build(name: str):
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    if name == "mnist":
        return dropout_cnn(28)
    if name == "cnn":
        return keras.Sequential([
            keras.Input((28, 28, 1)), L.Conv2D(128, 7, activation="relu"), L.Dropout(0.2),
            L.Conv2D(64, 3, activation="relu"), L.Dropout(0.2), L.Flatten(),
            L.Dense(64, activation="relu"), L.Dropout(0.25), L.Dense(10)])
    if name == "mobilenet":
        backbone = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False,
                                                  weights=None, pooling="avg")
        inputs = keras.Input((160, 160, 3))
        x = L.Dropout(0.3)(backbone(inputs))
        return keras.Model(inputs, L.Dense(10, activation="softmax")(x))
    raise ValueError(name)


def rate(count: int, seconds: float) -> float:
    return count / seconds


def timed(function, count: int, repeat: int = 1) -> float:
    function()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return rate(count, best)


def bench_model(
    name: str, passes: int, images: int, keras_images: int, e2e_images: int, work: Path
) -> dict:
    import keras  # noqa: F401

    from export import convert
    from export.api import ExportOptions, save
    from export.api import build as export_build
    from export.masks import mask_values_np
    from export.validate import mask_feeds, session
    from scorer.scoring import Plan, ScoreOptions, plan, run_passes, score
    from scorer.session import open_session

    model = build(name)
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    x = rng.random((images, *shape), dtype=np.float32)
    row = {"model": name, "passes": passes, "images": images}

    xk = x[:keras_images]

    def keras_loop():
        for _ in range(passes):
            model(xk, training=True)
    row["keras-loop"] = timed(keras_loop, len(xk))

    cached = export_build(model, ExportOptions(validation_passes=50))
    naive = export_build(model, ExportOptions(trunk="input", validate=False))
    sites = list(cached.metadata.dropout_sites)
    head = convert.find_head(model, None)
    masked = session(convert.convert_masked(model, shape, sites, head))
    batch = 32 if name == "mobilenet" else 256

    def ort_naive():
        for t in range(passes):
            index = np.array([t])
            feeds = mask_feeds(sites, lambda k, s, index=index: mask_values_np(s, k, 0, index))
            for i in range(0, images, batch):
                masked.run(None, {"images": x[i:i + batch], **feeds})
    row["ort-naive"] = timed(ort_naive, images)

    ones = mask_feeds(sites, lambda k, s: (np.ones((1, *s.mask_shape), np.float32),
                                           np.zeros((1, *s.mask_shape), np.float32)))

    def ort_single():
        for i in range(0, images, batch):
            masked.run(None, {"images": x[i:i + batch], **ones})
    row["ort-single"] = timed(ort_single, images, repeat=3)

    model_path = work / f"{name}.onnx"
    save(cached.model, model_path)
    naive_path = work / f"{name}_naive.onnx"
    save(naive.model, naive_path)
    options = ScoreOptions(passes=passes, device="cpu")
    naive_session = open_session(naive_path, "cpu")
    naive_plan = plan(naive_session, options)

    def ort_replicate():
        for i in range(0, images, naive_plan.batch_size):
            run_passes(naive_session, x[i:i + naive_plan.batch_size], options, naive_plan)
    row["ort-replicate"] = timed(ort_replicate, images)

    mcd_session = open_session(model_path, "cpu")
    mcd_plan: Plan = plan(mcd_session, options)
    row["plan"] = f"batch {mcd_plan.batch_size}, {mcd_plan.pass_chunk} passes/call"

    def mcd_model():
        for i in range(0, images, mcd_plan.batch_size):
            run_passes(mcd_session, x[i:i + mcd_plan.batch_size], options, mcd_plan)
    row["mcd-model"] = timed(mcd_model, images, repeat=2)

    folder = work / f"{name}_images"
    write_photos(folder, e2e_images)
    out = work / f"{name}.h5"

    def mcd_e2e():
        score(folder, out, model_path, ScoreOptions(passes=passes, device="cpu", mode="overwrite"))
    row["mcd-e2e"] = timed(mcd_e2e, e2e_images)
    row["e2e-images"] = e2e_images
    return row


def write_photos(folder: Path, count: int) -> None:
    """JPEG photographs larger than any model input (crops of scikit-image's samples)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.iterdir())) == count:
        return
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
               skimage.data.rocket(), skimage.data.hubble_deep_field()]
    rng = np.random.default_rng(1)
    for i in range(count):
        image = sources[i % len(sources)]
        top = int(rng.integers(0, image.shape[0] - 256))
        left = int(rng.integers(0, image.shape[1] - 256))
        crop = image[top:top + 256, left:left + 256]
        Image.fromarray(crop).resize((320, 320)).save(folder / f"{i:06d}.jpg", quality=90)


def peak_memory(model_path: Path, folder: Path, passes: int, work: Path) -> int:
    """Peak resident memory (VmHWM) in MiB of a fresh process scoring ``folder`` end to end.

    VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` across ``exec`` from the forking parent,
    so a child of this (large) benchmark process would report the parent's peak.
    """
    code = (
        "from pathlib import Path; from scorer.scoring import ScoreOptions, score; "
        f"score(Path({str(folder)!r}), Path({str(work / 'mem.h5')!r}), Path({str(model_path)!r}), "
        f"ScoreOptions(passes={passes}, device='cpu', mode='overwrite')); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--images", type=int, default=128,
                        help="images per model, times 8 for mnist and 2 for mobilenet")
    parser.add_argument("--models", default="mnist,cnn,mobilenet")
    parser.add_argument("--memory-images", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mcd-bench-"))
    rows = []
    for name in args.models.split(","):
        images = args.images * IMAGE_SCALE[name]
        keras_images = 16 if name == "mobilenet" else 64
        print(f"benchmarking {name} ({images} images, T={args.passes}) ...", file=sys.stderr,
              flush=True)
        rows.append(bench_model(name, args.passes, images, keras_images, E2E_IMAGES[name], work))
    memory = None
    if "mobilenet" in args.models.split(","):
        small, large = args.memory_images, 10 * args.memory_images
        write_photos(work / "mem_small", small)
        write_photos(work / "mem_large", large)
        model = work / "mobilenet.onnx"
        memory = (small, peak_memory(model, work / "mem_small", args.passes, work),
                  large, peak_memory(model, work / "mem_large", args.passes, work))
    print_table(rows, memory, args.passes)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "memory": memory}, indent=2))
    return 0


def print_table(rows: list[dict], memory, passes: int) -> None:
    cpu = platform.processor() or platform.machine()
    print(f"\nmachine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
          f"T={passes}, CPU execution provider")
    columns = ["keras-loop", "ort-naive", "ort-replicate", "ort-single", "mcd-model", "mcd-e2e"]
    print(f"\n{'model':10s}" + "".join(f"{c:>15s}" for c in columns) + "   (images/s)")
    for row in rows:
        print(f"{row['model']:10s}" + "".join(f"{row[c]:15.1f}" for c in columns))
    print(f"\n{'model':10s} {'mcd/keras':>10s} {'mcd/naive':>10s} {'mcd/single':>11s} "
          f"{'e2e/mcd':>9s}   plan, end-to-end images")
    for row in rows:
        print(f"{row['model']:10s} {row['mcd-model'] / row['keras-loop']:10.1f} "
              f"{row['mcd-model'] / row['ort-naive']:10.1f} "
              f"{row['mcd-model'] / row['ort-single']:11.2f} "
              f"{row['mcd-e2e'] / row['mcd-model']:9.2f}   {row['plan']}, {row['e2e-images']}")
    if memory:
        small, small_mb, large, large_mb = memory
        print(f"\npeak memory (VmHWM), mobilenet end to end: {small} images {small_mb} MiB, "
              f"{large} images {large_mb} MiB, ratio {large_mb / small_mb:.2f}")


if __name__ == "__main__":
    sys.exit(main())
