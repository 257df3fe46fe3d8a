"""Benchmark: mcd-score on a PyTorch model against the PyTorch MC dropout loops users write.

Runs in an environment with PyTorch and mcd-score (not the project's own: it never installs
PyTorch)::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx==1.23.2 onnxscript \\
        scikit-image -e .
    /tmp/torchenv/bin/python scripts/bench_torch.py

Model: torchvision's MobileNetV2 (weights=None, 10 classes) at 160x160, whose classifier is
``Dropout(0.2) -> Linear``; T passes per image (50). Images per second of:

  torch-loop   the classic ``mc_predict``: ``eval()``, dropout modules in ``train()``, the whole
               model T times on each batch (``torch.no_grad``, PyTorch's default threads)
  torch-trunk  the strongest hand-written loop: the features once per batch, the dropout head T
               times in one vectorised batch
  ort-single   one deterministic ONNX Runtime pass of the same model (dropout off): the limit
  predict      ``scorer.predict`` on the same decoded uint8 arrays, T passes (metrics included)
  mcd-e2e      ``mcd-score`` end to end from JPEG files: decode -> ONNX -> HDF5

All on the same images, in interleaved rounds (every column once a round), each column's best
round reported, with the ratios of mcd-score's columns to the PyTorch loops.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

SIZE = 160
BATCH = 32


def photos(folder: Path, count: int) -> tuple[list[Path], np.ndarray]:
    """JPEG crops of scikit-image's photographs at 160x160 (``bench.write_photos``), and the same
    decoded as uint8."""
    from bench import write_photos

    paths = write_photos(folder, count, SIZE)
    return paths, np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train()
    return model


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def torch_loop(model, pixels, passes):
    with torch.no_grad():
        for start in range(0, len(pixels), BATCH):
            x = to_tensor(pixels[start:start + BATCH])
            probs = torch.stack([torch.softmax(model(x), -1) for _ in range(passes)])
            probs.mean(0), probs.std(0)


def torch_trunk(model, pixels, passes):
    with torch.no_grad():
        for start in range(0, len(pixels), BATCH):
            x = to_tensor(pixels[start:start + BATCH])
            features = torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1).flatten(1)
            tiled = features.repeat_interleave(passes, 0)
            probs = torch.softmax(model.classifier(tiled), -1).view(len(x), passes, -1)
            probs.mean(1), probs.std(1)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--loop-images", type=int, default=32, help="images of torch-loop")
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_torch")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import onnxruntime as ort

    import scorer
    from export.api import export_file
    from export.options import ExportOptions

    work = args.work
    paths, pixels = photos(work / "photos", args.images)
    model = make_model()
    example = to_tensor(pixels[:2])
    source, plain = work / "mobilenet_v2.onnx", work / "plain.onnx"
    torch.onnx.export(model, (example,), str(source), dynamo=False, opset_version=17,
                      training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}}, do_constant_folding=False)
    model.eval()
    torch.onnx.export(model, (example,), str(plain), dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    model = make_model()
    mc = work / "mobilenet_v2_mc.onnx"
    export_file(source, mc, ExportOptions(head="softmax", preprocessing="torchvision"))
    single = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    opened = scorer.open_model(mc, device="cpu")
    folder = work / "photos"
    runs = {
        "torch-loop": (args.loop_images, lambda: torch_loop(model, pixels[:args.loop_images],
                                                            args.passes)),
        "torch-trunk": (len(pixels), lambda: torch_trunk(model, pixels, args.passes)),
        "ort-single": (len(pixels), lambda: [single.run(None, {"input": to_tensor(
            pixels[s:s + BATCH]).numpy()}) for s in range(0, len(pixels), BATCH)]),
        "predict": (len(pixels), lambda: scorer.predict(opened, pixels, passes=args.passes)),
        "mcd-e2e": (len(pixels), lambda: subprocess.run(
            [str(Path(sys.executable).parent / "mcd-score"), str(folder), str(work / "out.h5"),
             "--model", str(mc), "--passes", str(args.passes), "--overwrite", "--device", "cpu",
             "-q"], check=True)),
    }
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (count, run) in runs.items():
            best[name] = max(best.get(name, 0.0), count / timed(run))
    print(f"MobileNetV2 {SIZE}x{SIZE}, T={args.passes}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), best of {args.rounds} rounds, images/s:")
    for name, value in best.items():
        print(f"  {name:12s} {value:9.1f}")
    ratios = {f"{ours}/{theirs}": best[ours] / best[theirs]
              for ours in ("predict", "mcd-e2e") for theirs in ("torch-loop", "torch-trunk",
                                                                "ort-single")}
    for name, value in ratios.items():
        print(f"  {name:24s} {value:6.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rates": best, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
