"""Benchmark: MC dropout throughput of mcd-score against its anchors, all measured in one run.

For each model (T passes per image), images per second of:
  keras-loop   the usual recipe: ``model(x, training=True)`` T times, on arrays in memory
  keras-mc     the best hand-written Keras MC dropout, end to end from the same JPEG files, no
               file written (scripts/bench_keras.py: tf.data decoding in parallel, trunk once
               per image, the dropout head T times in one vectorised batch); both Keras columns
               run in a process of their own with TensorFlow's defaults (oneDNN on)
  ort-single   one deterministic ONNX Runtime pass of the plain converted model (tf2onnx,
               dropout off, ONNX Runtime's defaults), on arrays: the physical limit
  mcd-model    mcd-score's graph and run loop on decoded arrays (T passes, trunk cached)
  predict      scorer.predict on the same arrays in memory (preprocessed): the notebook API,
               metrics and rows included
  mcd-e2e      mcd-score end to end: JPEG files on disk -> decode -> ONNX -> HDF5, start-up
               and the final merge included, default settings
  e2e-1k       the same on the first 1,024 files only, where start-up and the merge weigh more
The columns are measured in interleaved rounds (every column once per round) and each reports
its best round, so a slow moment of this shared machine does not land on one column only.
Then the stage breakdown (scripts/bench_stages.py): CPU per image of each decoding step, and the
scoring thread's time by stage in the best mcd-e2e run; and the peak memory of the whole process
tree of a default run (main process and decode workers) for N and 10*N images, each fresh.

Usage: python scripts/bench.py [--passes 50] [--rounds 3] [--models mnist,cnn,mobilenet]
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

import numpy as np  # noqa: E402
from bench_stages import STAGES, image_costs, score_with_stages  # noqa: E402
from digits import dropout_cnn  # noqa: E402
from PIL import Image  # noqa: E402

FILE_SIZE = 320
# images per column: enough that the fixed costs (session, the final merge, ~0.3-0.5 s) stay a
# few percent of an end-to-end run, few enough that a round takes under a minute per model.
IMAGES = {"mnist": {"model": 8192, "keras": 8192, "e2e": 16384, "loop": 64},
          "cnn": {"model": 256, "keras": 256, "e2e": 256, "loop": 64},
          "mobilenet": {"model": 1024, "keras": 1024, "e2e": 4096, "loop": 4}}
COLUMNS = ("keras-loop", "keras-mc", "ort-single", "mcd-model", "predict", "mcd-e2e", "e2e-1k")
SMALL_RUN = 1024  # images of the e2e-1k column: a small folder, as most runs see (1,088 photos)


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


def export(model, name: str, work: Path) -> Path:
    """The mcd-score graph through the public export API (MobileNet: its own [-1, 1] scaling)."""
    from export.api import ExportOptions, build, save

    scaling = {"scale": 1 / 127.5, "offset": -1.0} if name == "mobilenet" else {}
    path = work / f"{name}.onnx"
    save(build(model, ExportOptions(validation_passes=50, **scaling)).model, path)
    return path


def plain_onnx(model):
    """The deterministic model (dropout off) as ONNX Runtime runs it with its defaults."""
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="images")]
    forward = tf.function(lambda images: model(images, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=17)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def write_photos(folder: Path, count: int, size: int = FILE_SIZE) -> list[Path]:
    """JPEG photographs of ``size`` x ``size`` (crops of scikit-image's samples), written once."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
               skimage.data.rocket(), skimage.data.hubble_deep_field()]
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        image = sources[i % len(sources)]
        top = int(rng.integers(0, image.shape[0] - 256))
        left = int(rng.integers(0, image.shape[1] - 256))
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            crop = image[top:top + 256, left:left + 256]
            Image.fromarray(crop).resize((size, size)).save(path, quality=90)
        paths.append(path)
    return paths


def rate(function, count: int) -> float:
    start = time.perf_counter()
    function()
    return count / (time.perf_counter() - start)


def columns(name: str, passes: int, work: Path, photos: list[Path]) -> tuple[dict, dict]:
    """One callable per column (each returns images/s) and what the report needs besides."""
    from scorer.images.listing import ImageRef
    from scorer.model.passes import plan, run_passes
    from scorer.model.session import open_session
    from scorer.scoring import ScoreOptions

    counts = IMAGES[name]
    model = build(name)
    path = export(model, name, work)
    mcd = open_session(path, "cpu", spinning=True)  # the model alone: ONNX Runtime's defaults
    pre = mcd.metadata.preprocessing
    run_plan = plan(mcd.metadata, passes, 2048, None, mcd.provider)
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(0).random((counts["model"], *shape), dtype=np.float32)
    single = plain_onnx(model)
    keras = KerasAnchors(model, name, work, pre, passes, run_plan.batch_size, counts["loop"],
                         [str(p) for p in photos[:counts["keras"]]])
    refs = [ImageRef(p.name, p) for p in photos[:counts["e2e"]]]
    stages: list = []

    def ort_single() -> None:
        for i in range(0, len(x), run_plan.batch_size):
            single.run(None, {"images": x[i:i + run_plan.batch_size]})

    def mcd_model() -> None:
        for i in range(0, len(x), run_plan.batch_size):
            run_passes(mcd, x[i:i + run_plan.batch_size], passes, 0, False, run_plan)

    def predict() -> None:
        from scorer.predicting import predict as predict_arrays

        predict_arrays(mcd, x, passes, preprocessed=True)

    def mcd_e2e() -> float:
        options = ScoreOptions(passes=passes, device="cpu", mode="overwrite")
        seconds, measured = score_with_stages(refs, work / f"{name}.h5", path, options)
        stages.append((len(refs) / seconds, measured))
        return len(refs) / seconds

    def e2e_small() -> float:
        few = refs[:SMALL_RUN]
        options = ScoreOptions(passes=passes, device="cpu", mode="overwrite")
        return len(few) / score_with_stages(few, work / f"{name}-1k.h5", path, options)[0]

    calls = {"keras-loop": lambda: keras.rate("keras-loop"),
             "keras-mc": lambda: keras.rate("keras-mc"),
             "ort-single": lambda: rate(ort_single, len(x)),
             "mcd-model": lambda: rate(mcd_model, len(x)),
             "predict": lambda: rate(predict, len(x)),
             "mcd-e2e": mcd_e2e, "e2e-1k": e2e_small}
    extra = {"plan": f"batch {run_plan.batch_size}, {run_plan.pass_chunk} passes/call",
             "stages": stages, "pre": pre, "refs": refs, "model_path": path}
    return calls, extra


class KerasAnchors:
    """keras-loop and keras-mc, run by ``bench_keras.py serve`` in a process of their own with
    TensorFlow's defaults: this process imports the exporter, which turns oneDNN off
    (``TF_ENABLE_ONEDNN_OPTS=0``, for reproducible exports), and that slows TensorFlow on the CPU
    by about 30%; a user's own script runs with oneDNN on."""

    def __init__(self, model, name: str, work: Path, pre, passes: int, batch: int, loop: int,
                 files: list[str]) -> None:
        import dataclasses

        path = work / f"{name}.keras"
        model.save(path)
        job = {"model": str(path), "pre": dataclasses.asdict(pre), "passes": passes,
               "file_size": [FILE_SIZE, FILE_SIZE], "batch": batch, "loop": loop, "files": files}
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bench_keras.py")), "serve",
             json.dumps(job)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the Keras anchor process did not start")

    def rate(self, column: str) -> float:
        self.process.stdin.write(column + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())


def bench_model(name: str, passes: int, rounds: int, work: Path, photos: list[Path]) -> dict:
    calls, extra = columns(name, passes, work, photos)
    for call in calls.values():  # warm-up: tracing, first session runs, page cache
        call()
    extra["stages"].clear()
    best = dict.fromkeys(COLUMNS, 0.0)
    for round_ in range(rounds):
        for column in COLUMNS:
            best[column] = max(best[column], calls[column]())
        print(f"  {name} round {round_ + 1}: " + ", ".join(f"{c} {best[c]:.1f}" for c in COLUMNS),
              file=sys.stderr, flush=True)
    _, stages = max(extra["stages"], key=lambda pair: pair[0])
    costs = image_costs(extra["refs"][:2048], extra["pre"])
    return {"model": name, "passes": passes, **best, "plan": extra["plan"],
            "e2e-images": IMAGES[name]["e2e"], "stages": stages.shares(),
            "stage-seconds": stages.seconds, "e2e-seconds": stages.total, "costs": costs,
            "model_path": str(extra["model_path"])}


def peak_memory(model: Path, folder: Path, count: int, passes: int, work: Path) -> int:
    """Peak memory in MiB of a fresh default run on ``count`` files: the largest sum over the
    process tree (scorer and decode workers) of the proportional set size, sampled every 20 ms."""
    code = (
        "import sys; from pathlib import Path; from scorer.images.listing import ImageRef; "
        "from scorer.scoring import ScoreOptions, score; "
        f"refs = [ImageRef(p.name, p) for p in sorted(Path({str(folder)!r}).iterdir())[:{count}]]; "
        f"score(refs, Path({str(work / 'mem.h5')!r}), Path({str(model)!r}), "
        f"ScoreOptions(passes={passes}, device='cpu', mode='overwrite'))"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_pss(process.pid))
        time.sleep(0.02)
    if process.returncode:
        raise RuntimeError(f"the memory run failed with exit code {process.returncode}")
    return peak >> 10


def tree_pss(root: int) -> int:
    """Sum of the proportional set size (KiB) of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="mnist,cnn,mobilenet")
    parser.add_argument("--memory-images", type=int, default=500)
    parser.add_argument("--work", type=Path, help="keep the photos and models here")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mcd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",")
    count = max(max(IMAGES[n]["e2e"] for n in names), 10 * args.memory_images)
    print(f"writing {count} photographs to {work / 'photos'} ...", file=sys.stderr, flush=True)
    photos = write_photos(work / "photos", count)
    rows = []
    for name in names:
        print(f"benchmarking {name} (T={args.passes}, {args.rounds} rounds) ...", file=sys.stderr,
              flush=True)
        rows.append(bench_model(name, args.passes, args.rounds, work, photos))
    memory = None
    if "mobilenet" in names:
        model = Path(next(r["model_path"] for r in rows if r["model"] == "mobilenet"))
        small, large = args.memory_images, 10 * args.memory_images
        memory = (small, peak_memory(model, work / "photos", small, args.passes, work),
                  large, peak_memory(model, work / "photos", large, args.passes, work))
    print_report(rows, memory, args.passes)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "memory": memory}, indent=2, default=str))
    return 0


def print_report(rows: list[dict], memory, passes: int) -> None:
    cpu = platform.processor() or platform.machine()
    print(f"\nmachine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
          f"T={passes}, CPU execution provider, load average {os.getloadavg()[0]:.2f}")
    print(f"\n{'model':10s}" + "".join(f"{c:>12s}" for c in COLUMNS) + "   (images/s)")
    for row in rows:
        print(f"{row['model']:10s}" + "".join(f"{row[c]:12.1f}" for c in COLUMNS))
    sizes = ", ".join(f"{row['model']} {row['e2e-images']}" for row in rows)
    print(f"(mcd-e2e: {sizes} images; e2e-1k: at most {SMALL_RUN})")
    print(f"\n{'model':10s} {'e2e/single':>10s} {'1k/single':>10s} {'e2e/model':>10s} "
          f"{'e2e/keras-mc':>12s} {'model/single':>12s} {'mc/keras-loop':>13s} "
          f"{'predict/model':>13s} {'predict/loop':>12s}   plan, end-to-end images")
    for row in rows:
        print(f"{row['model']:10s} {row['mcd-e2e'] / row['ort-single']:10.2f} "
              f"{row['e2e-1k'] / row['ort-single']:10.2f} "
              f"{row['mcd-e2e'] / row['mcd-model']:10.2f} {row['mcd-e2e'] / row['keras-mc']:12.2f} "
              f"{row['mcd-model'] / row['ort-single']:12.2f} "
              f"{row['mcd-model'] / row['keras-loop']:13.1f} "
              f"{row['predict'] / row['mcd-model']:13.2f} {row['predict'] / row['keras-loop']:12.1f}"
              f"   {row['plan']}, {row['e2e-images']}")
    print("\nstage breakdown, CPU ms per image: single steps on one thread; pipelines through 2 "
          "workers over 2,048 files, start-up and IPC included, all processes counted")
    names = list(rows[0]["costs"])
    print(f"{'':30s}" + "".join(f"{row['model']:>11s}" for row in rows))
    for step in names:
        print(f"{step:30s}" + "".join(f"{row['costs'][step]:11.3f}" for row in rows))
    print("\nstage breakdown, share of the best mcd-e2e run's wall time (scoring thread)")
    print(f"{'':30s}" + "".join(f"{row['model']:>11s}" for row in rows))
    for stage in STAGES:
        print(f"{stage:30s}" + "".join(f"{100 * row['stages'][stage]:10.1f}%" for row in rows))
    print(f"{'(run seconds)':30s}" + "".join(f"{row['e2e-seconds']:11.2f}" for row in rows))
    if memory:
        small, small_mb, large, large_mb = memory
        print(f"\npeak memory (PSS of the process tree), mobilenet end to end: {small} images "
              f"{small_mb} MiB, {large} images {large_mb} MiB, ratio {large_mb / small_mb:.2f}")


if __name__ == "__main__":
    sys.exit(main())
