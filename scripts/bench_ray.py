"""Benchmark: mcd-score --ray on a local cluster against a local run, measured in one run.

For a model exported here (MobileNetV2 160x160 with a dropout head, or the MNIST CNN) and JPEG
photographs written here, images per second of:

  local          scorer.score on this machine (decode threads + ONNX Runtime on all cores)
  ray-1          score_on_ray with one worker of one CPU: a worker's own rate (the unit of scaling)
  ray            score_on_ray with one worker per CPU, on a running local cluster

plus the cluster's start-up, and the ratio ray / local (Ray's overhead), and what the measured
figures predict for larger clusters: seconds ~ start + N / (workers * ray-1 rate) + stitching.

Each figure is the best of ``--repeat`` runs; ray and ray-1 include starting the actors (a few
seconds), not the cluster.

Usage: python scripts/bench_ray.py [--model mobilenet|mnist] [--images 3000] [--passes 50] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def export_model(name: str, folder: Path) -> Path:
    """Build (random weights) and export the benchmark model."""
    import keras
    from digits import dropout_cnn

    from export.api import ExportOptions, build, save

    keras.utils.set_random_seed(0)
    if name == "mnist":
        model, size = dropout_cnn(28), None
    else:
        backbone = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False,
                                                  weights=None, pooling="avg")
        inputs = keras.Input((160, 160, 3))
        outputs = keras.layers.Dense(10, activation="softmax")(
            keras.layers.Dropout(0.3)(backbone(inputs)))
        model, size = keras.Model(inputs, outputs), (160, 160)
    path = folder / f"{name}.onnx"
    save(build(model, ExportOptions(input_size=size, validation_passes=20)).model, path)
    return path


def write_photos(folder: Path, count: int) -> Path:
    """``count`` 320x320 JPEG crops of scikit-image's photographs, in ten class folders."""
    import skimage.data

    sources = [getattr(skimage.data, n)() for n in ("astronaut", "coffee", "rocket", "hubble_deep_field")]
    rng = np.random.default_rng(0)
    for i in range(count):
        image = sources[i % len(sources)]
        y, x = rng.integers(0, image.shape[0] - 320), rng.integers(0, image.shape[1] - 320)
        label = folder / f"c{i % 10}"
        label.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[y:y + 320, x:x + 320]).save(label / f"{i:06d}.jpg", quality=90)
    return folder


def timed(function, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (this machine is shared: the best is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mobilenet", "mnist"), default="mobilenet")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs each")
    args = parser.parse_args()
    import ray

    from scorer.distributed.driver import RayOptions, score_on_ray
    from scorer.scoring import ScoreOptions, score

    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="mcd-bench-ray-") as temporary:
        work = Path(temporary)
        model = export_model(args.model, work)
        images = write_photos(work / "images", args.images)
        options = ScoreOptions(passes=args.passes, mode="overwrite")
        local = timed(lambda: score(images, work / "local.h5", model, options), args.repeat)
        start = timed(lambda: ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                                       logging_level="ERROR"))
        one = timed(lambda: score_on_ray(images, work / "one.h5", model, options,
                                         RayOptions(workers=1)), args.repeat)
        many = timed(lambda: score_on_ray(images, work / "ray.h5", model, options,
                                          RayOptions(workers=cpus)), args.repeat)
        ray.shutdown()
    n = args.images
    print(f"{args.model}, T={args.passes}, {n} JPEG images of 320x320, {cpus} CPUs\n")
    print(f"{'local':>10s}{'ray-1':>10s}{'ray':>10s}   (images/s; ray: {cpus} workers, cluster "
          "already running)")
    print(f"{n / local:10.1f}{n / one:10.1f}{n / many:10.1f}\n")
    print(f"ray / local = {local / many:.2f}; cluster start-up {start:.1f} s (once per cluster)")
    rate = n / one
    print("\npredicted with these figures, seconds for 1,000,000 images "
          "(start-up + N / (workers x ray-1 rate)):")
    for workers in (cpus, 16, 64, 256):
        print(f"  {workers:4d} CPU workers: {start + 1e6 / (workers * rate):9.0f} s")


if __name__ == "__main__":
    main()
