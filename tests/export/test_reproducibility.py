"""An image's outputs depend only on (model, seed, T, image): not on the batch, its order, the process
or how the passes are chunked.

ONNX Runtime's CPU kernels give bit-identical rows whatever the batch size for these models, so the
checks are exact (``np.array_equal``), not within a tolerance, except for ``entropy_sum``: ONNX
Runtime's elementwise ``Log`` gives results that differ in the last bit depending on an element's
position in the buffer (vectorised body or scalar tail), so ``entropy_sum`` is only equal within
1e-6 relative (measured: one float32 ulp).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from export.api import save

MODEL_NAMES = ["mnist_cnn", "cnn_linear", "mlp_input_dropout", "binary_sigmoid_cnn",
               "batchnorm_functional", "mobilenet_nested", "spatial_dropout", "gaussian_dropout",
               "alpha_dropout", "noise_shape_dropout"]
SEED, PASSES = 11, 6


def assert_same(key: str, got: np.ndarray, want: np.ndarray, what: str) -> None:
    if key == "entropy_sum":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=f"{what}: {key} differs")
    else:
        assert np.array_equal(got, want), f"{what}: {key} differs"


def all_outputs(exported, images: np.ndarray, seed: int = SEED, start: int = 0,
                count: int = PASSES) -> dict[str, np.ndarray]:
    names = [o.name for o in exported.onnx_model.graph.output]
    return dict(zip(names, exported.run(images, seed, start, count), strict=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_outputs_do_not_depend_on_the_batch(name, exports):
    exported = exports.get(name)
    rng = np.random.default_rng(0)
    images = rng.random((12, *exported.image_shape), dtype=np.float32)
    others = rng.random((20, *exported.image_shape), dtype=np.float32)
    reference = all_outputs(exported, images)

    batches = {
        "one at a time": [[i] for i in range(12)],
        "uneven batches": [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11]],
    }
    for label, groups in batches.items():
        for group in groups:
            got = all_outputs(exported, images[group])
            for key, value in got.items():
                assert_same(key, value, reference[key][group], label)

    order = rng.permutation(12)
    shuffled = all_outputs(exported, images[order])
    for key, value in shuffled.items():
        assert_same(key, value, reference[key][order], "shuffled")

    mixed = np.concatenate([others[:7], images, others[7:]])
    got = all_outputs(exported, mixed)
    for key, value in got.items():
        assert_same(key, value[7:19], reference[key], "among other images")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pass_chunks_concatenate_to_one_call(name, exports):
    exported = exports.get(name)
    images = np.random.default_rng(1).random((3, *exported.image_shape), dtype=np.float32)
    whole = exported.passes(images, SEED, 0, 10)
    chunks = [exported.passes(images, SEED, start, count)
              for start, count in ((0, 1), (1, 4), (5, 2), (7, 3))]
    assert np.array_equal(np.concatenate(chunks, axis=1), whole)
    # Pass statistics over chunks combine to the statistics of the whole (Chan et al.).
    first, second = all_outputs(exported, images, SEED, 0, 4), all_outputs(exported, images, SEED, 4, 6)
    full = all_outputs(exported, images, SEED, 0, 10)
    np.testing.assert_allclose(first["pass_sum"] + second["pass_sum"], full["pass_sum"], rtol=1e-5,
                               atol=1e-6)
    delta = second["pass_sum"] / 6 - first["pass_sum"] / 4
    combined_m2 = first["pass_m2"] + second["pass_m2"] + delta**2 * 4 * 6 / 10
    np.testing.assert_allclose(combined_m2, full["pass_m2"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_different_seeds_give_different_passes(name, exports):
    exported = exports.get(name)
    images = np.random.default_rng(2).random((2, *exported.image_shape), dtype=np.float32)
    seeds = [0, 1, 2, 2**32, 2**32 + 1, 2**63 - 1]
    runs = [exported.passes(images, seed, 0, 4) for seed in seeds]
    assert len({run.tobytes() for run in runs}) == len(seeds)
    # ... while the same seed gives the same passes in a second call.
    assert np.array_equal(exported.passes(images, seeds[-1], 0, 4), runs[-1])


SUBPROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxruntime as ort

    path, images_path, out_path, seed, passes = sys.argv[1:]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = np.load(images_path)
    feeds = {"images": images, "seed": np.array(int(seed), np.int64),
             "pass_start": np.array(0, np.int64), "pass_count": np.array(int(passes), np.int64)}
    np.save(out_path, session.run(["passes"], feeds)[0])
    assert "tensorflow" not in sys.modules
""")


@pytest.mark.parametrize("name", ["mnist_cnn", "mobilenet_nested", "gaussian_dropout"])
def test_same_outputs_in_a_fresh_process(name, exports, tmp_path):
    exported = exports.get(name)
    path = tmp_path / "model.onnx"
    save(exported.onnx_model, path)
    images = np.random.default_rng(3).random((5, *exported.image_shape), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    subprocess.run([sys.executable, "-c", SUBPROCESS, str(path), str(tmp_path / "images.npy"),
                    str(tmp_path / "out.npy"), str(SEED), str(PASSES)], check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "out.npy"), exported.passes(images, SEED, 0, PASSES))
