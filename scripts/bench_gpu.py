"""GPU benchmark (no TensorFlow needed): for each model prepared by ``gpu_check.py prepare``,
images per second of

  ort-single   one deterministic pass of the plain converted model on the device (ONNX Runtime's
               defaults, arrays ready in memory): the limit
  mcd-model    mcd-score's graph and pass loop on decoded arrays (T passes, trunk cached)
  mcd-e2e      mcd-score end to end from the JPEG files (decode -> device -> HDF5)

and, from the end-to-end run's stage breakdown, the share of the scoring thread's time spent
waiting for decoded batches (decode-bound when high), with the decode workers used.

Usage: python scripts/bench_gpu.py DIR [--device cuda|cpu] [--passes 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from scorer.images.batches import default_workers
    from scorer.images.listing import discover

    bench = args.folder / "bench"
    refs = discover(bench / "photos")
    results = {"device": args.device, "passes": args.passes, "workers": default_workers(),
               "models": {}}
    for graph in sorted(p for p in bench.glob("*.onnx") if not p.name.endswith(".plain.onnx")):
        results["models"][graph.stem] = measure(graph, refs, args.device, args.passes, args.rounds)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def measure(graph: Path, refs: list, device: str, passes: int, rounds: int) -> dict[str, float]:
    """The columns of one model (see the module docstring), best of ``rounds``."""
    import onnxruntime as ort
    from bench_stages import score_with_stages

    from scorer.images.batches import default_workers
    from scorer.model.passes import plan, run_passes
    from scorer.model.session import CPU, CUDA, cuda_options, open_session
    from scorer.scoring import ScoreOptions

    session = open_session(graph, device)
    meta = session.metadata
    images = np.random.default_rng(0).random([len(refs), *meta.input_shape[1:]], dtype=np.float32)
    chosen = plan(meta, passes, 2048, None, session.provider)
    providers = [(CUDA, cuda_options()), CPU] if device == "cuda" else [CPU]
    single = ort.InferenceSession(str(graph.with_suffix(".plain.onnx")), providers=providers)
    input_name = single.get_inputs()[0].name
    batches = [images[s:s + chosen.batch_size] for s in range(0, len(images), chosen.batch_size)]

    def timed(function) -> float:
        start = time.perf_counter()
        function()
        return len(images) / (time.perf_counter() - start)

    def ort_single() -> None:
        for batch in batches:
            single.run(None, {input_name: batch})

    def model_loop() -> None:
        for batch in batches:
            run_passes(session, batch, passes, 0, False, chosen)

    ort_single()  # warm: cuDNN's algorithm search, the arena
    columns: dict[str, float] = {}
    stages = None
    for _ in range(rounds):
        columns["ort-single"] = max(columns.get("ort-single", 0.0), timed(ort_single))
        columns["mcd-model"] = max(columns.get("mcd-model", 0.0), timed(model_loop))
        with tempfile.TemporaryDirectory() as work:
            seconds, measured = score_with_stages(refs, Path(work) / "out.h5", graph,
                                                  ScoreOptions(passes=passes, device=device))
        if len(refs) / seconds > columns.get("mcd-e2e", 0.0):
            columns["mcd-e2e"], stages = len(refs) / seconds, measured
    columns["model/single"] = columns["mcd-model"] / columns["ort-single"]
    columns["e2e/single"] = columns["mcd-e2e"] / columns["ort-single"]
    columns["waiting for batches"] = stages.shares()["wait for batch"]
    print(f"{graph.stem} on {session.provider} (T={passes}, batch {chosen.batch_size}, "
          f"{chosen.pass_chunk} passes a call, {default_workers()} decode workers): "
          + ", ".join(f"{k} {v:,.2f}" for k, v in columns.items()), flush=True)
    return columns


if __name__ == "__main__":
    main()
