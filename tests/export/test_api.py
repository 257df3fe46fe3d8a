"""Whole exports of the test models (``exports.MODELS``): structure, exact parity with Keras for
given masks, trunk caching.

Every model is exported once per session (``exports`` fixture in ``conftest.py``) with validation on.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from export.rewrites.masks import mask_values_np

# name -> the dropout sites a reader of the model code expects: (kind, rate, mask shape).
EXPECTED_SITES = {
    "mnist_cnn": [("dropout", 0.25, (13, 13, 32)), ("dropout", 0.5, (128,))],
    "cnn_linear": [("dropout", 0.2, (10, 10, 128)), ("dropout", 0.2, (8, 8, 64)),
                   ("dropout", 0.25, (64,))],
    "mlp_input_dropout": [("dropout", 0.2, (784,)), ("dropout", 0.2, (500,)),
                          ("dropout", 0.2, (250,))],
    "binary_sigmoid_cnn": [("dropout", 0.3, (7 * 7 * 8,))],
    "batchnorm_functional": [("dropout", 0.3, (10, 10, 8)), ("dropout", 0.4, (16,))],
    "mobilenet_nested": [("dropout", 0.3, (1280,))],
    "spatial_dropout": [("spatial_dropout", 0.3, (1, 1, 8))],
    "gaussian_dropout": [("gaussian_dropout", 0.3, (10, 10, 8)), ("gaussian_dropout", 0.2, (16,))],
    "alpha_dropout": [("alpha_dropout", 0.2, (32,)), ("alpha_dropout", 0.1, (16,))],
    "noise_shape_dropout": [("dropout", 0.3, (1, 1, 8))],
}
# name -> (output kind, classes)
EXPECTED_HEAD = {
    "mnist_cnn": ("probabilities", 10),
    "cnn_linear": ("values", 10),
    "mlp_input_dropout": ("probabilities", 10),
    "binary_sigmoid_cnn": ("probabilities", 2),
    "batchnorm_functional": ("probabilities", 4),
    "mobilenet_nested": ("probabilities", 5),
    "spatial_dropout": ("probabilities", 3),
    "gaussian_dropout": ("probabilities", 3),
    "alpha_dropout": ("probabilities", 3),
    "noise_shape_dropout": ("probabilities", 3),
}
MODEL_NAMES = list(EXPECTED_SITES)
SEQUENTIAL = [n for n in MODEL_NAMES if n not in ("batchnorm_functional", "mobilenet_nested")]
PARITY_PASSES = (0, 3, 999, 2**31 + 5)
PARITY_SEEDS = (0, 2**40 + 123)


def keras_dropout_layers(model) -> list:
    """Stochastic layers found by walking the model ourselves (not with export.from_keras.convert's walk)."""
    from export.from_keras.backend import keras

    kinds = (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
             keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
             keras.layers.SpatialDropout3D)
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += keras_dropout_layers(layer)
        elif isinstance(layer, kinds):
            found.append(layer)
    return found


def masks_for(sites, seed: int, t: int):
    muls, adds = [], []
    for k, site in enumerate(sites):
        mul, add = mask_values_np(site, k, seed, np.array([t]))
        muls.append(mul)
        adds.append(add)
    return muls, adds


def sequential_with_masks(model, images: np.ndarray, muls, adds) -> np.ndarray:
    """Independent reference: run a Sequential model layer by layer, applying ``x * mul + add``."""
    x = images
    k = 0
    dropout_layers = keras_dropout_layers(model)
    for layer in model.layers:
        if layer in dropout_layers:
            x = np.asarray(x) * muls[k] + (0.0 if adds[k] is None else adds[k])
            k += 1
        else:
            x = layer(x, training=False)
    return np.asarray(x, np.float32)


def as_classes(values: np.ndarray, kind_classes: tuple[str, int]) -> np.ndarray:
    if values.shape[-1] == 1 and kind_classes[1] == 2:
        return np.concatenate([1.0 - values, values], axis=-1)
    return values


def downstream(graph: onnx.GraphProto, sources: set[str]) -> list[onnx.NodeProto]:
    """Nodes that (transitively) read one of ``sources`` (graph nodes are topologically sorted)."""
    reached, nodes = set(sources), []
    for node in graph.node:
        if any(name in reached for name in node.input):
            reached.update(node.output)
            nodes.append(node)
    return nodes


def tile_sources(graph: onnx.GraphProto) -> list[str]:
    """The model tensors expanded over the passes: ``Unsqueeze(x, 1)`` added by the rewrite, feeding
    a ``Tile`` or a mask ``Mul`` broadcast over ``[N, T, ...]`` -> ``x``."""
    producers = {out: node for node in graph.node for out in node.output}
    sources = []
    for node in graph.node:
        if node.op_type != "Unsqueeze" or not node.name.startswith("mcd"):
            continue
        source = node.input[0]
        if source in producers and producers[source].name.startswith("mcd"):
            continue  # a generated mask, not a model tensor
        axes = next(i for i in graph.initializer if i.name == node.input[1])
        assert list(onnx.numpy_helper.to_array(axes)) == [1]
        sources.append(source)
    return sources


def per_pass(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes that run once per pass: everything downstream of the seed or the pass count."""
    return downstream(graph, {"seed", "pass_count"})


# ---- 1. structure --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_export_structure(name, exports, tmp_path):
    from export.api import save

    exported = exports.get(name)
    meta = exported.metadata
    keras_layers = keras_dropout_layers(exported.keras_model)
    assert len(meta.dropout_sites) == len(keras_layers) == len(EXPECTED_SITES[name])
    for site, layer, (kind, rate, mask_shape) in zip(meta.dropout_sites, keras_layers,
                                                     EXPECTED_SITES[name], strict=True):
        assert (site.name, site.kind, site.mask_shape) == (layer.name, kind, mask_shape)
        assert site.rate == pytest.approx(rate)
    assert (meta.output_kind, meta.num_outputs) == EXPECTED_HEAD[name]
    assert meta.trunk == "cached"
    assert exported.result.warnings == []
    assert any(line.startswith("same masks") for line in exported.result.report)
    assert any(line.startswith("MC mean") for line in exported.result.report)

    path = tmp_path / f"{name}.onnx"
    save(exported.onnx_model, path)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.ir_version <= 13
    assert {o.domain: o.version for o in model.opset_import}.get("", 0) <= 21
    graph = model.graph
    assert [i.name for i in graph.input] == ["images", "seed", "pass_start", "pass_count"]
    outputs = ["passes", "pass_sum", "pass_m2"]
    if meta.output_kind == "probabilities":
        outputs += ["entropy_sum", "votes"]
    assert [o.name for o in graph.output] == outputs
    ops = [node.op_type for node in graph.node]
    bernoulli = sum(site.kind != "gaussian_dropout" for site in meta.dropout_sites)
    gaussian = len(meta.dropout_sites) - bernoulli
    assert ops.count("GreaterOrEqual") == bernoulli
    assert ops.count("Cos") == gaussian
    assert not {"Dropout", "RandomUniform", "RandomNormal", "RandomUniformLike",
                "RandomNormalLike", "Bernoulli"} & set(ops)

    session = exports.ort_session(str(path))
    images = np.random.default_rng(0).random((3, *exported.image_shape), dtype=np.float32)
    passes = session.run(["passes"], exports.feeds(images, 0, 0, 5))[0]
    assert passes.shape == (3, 5, meta.num_outputs)
    assert np.isfinite(passes).all()
    assert passes.std(axis=1).max() > 1e-4, "passes do not differ"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_statistics_outputs_match_numpy(name, exports):
    """pass_sum, pass_m2, entropy_sum and votes equal numpy on the passes output."""
    exported = exports.get(name)
    images = np.random.default_rng(1).random((3, *exported.image_shape), dtype=np.float32)
    results = dict(zip([o.name for o in exported.onnx_model.graph.output],
                       exported.run(images, seed=5, start=0, count=30), strict=True))
    passes = results["passes"].astype(np.float64)
    np.testing.assert_allclose(results["pass_sum"], passes.sum(axis=1), rtol=1e-5, atol=1e-5)
    deviations = passes - passes.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(results["pass_m2"], (deviations**2).sum(axis=1), rtol=1e-4, atol=1e-6)
    if exported.metadata.output_kind == "probabilities":
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(passes > 0, passes * np.log(passes), 0.0)
        np.testing.assert_allclose(results["entropy_sum"], -plogp.sum(axis=(1, 2)), rtol=1e-4,
                                   atol=1e-4)
        votes = np.stack([np.bincount(row, minlength=passes.shape[2])
                          for row in passes.argmax(axis=2)])
        np.testing.assert_array_equal(results["votes"], votes)


# ---- 2. exact parity with Keras for given masks ---------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parity_with_keras_for_given_masks(name, exports):
    from export.from_keras.reference import keras_with_masks

    exported = exports.get(name)
    model, sites = exported.keras_model, list(exported.metadata.dropout_sites)
    head = exported.head()
    images = np.random.default_rng(2).random((5, *exported.image_shape), dtype=np.float32)
    for seed in PARITY_SEEDS:
        for t in PARITY_PASSES:
            got = exported.passes(images, seed, t, 1)[:, 0]
            muls, adds = masks_for(sites, seed, t)
            want = as_classes(keras_with_masks(model, images, head, sites, muls, adds),
                              EXPECTED_HEAD[name])
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"seed {seed} pass {t}")
            if name in SEQUENTIAL:
                independent = as_classes(sequential_with_masks(model, images, muls, adds),
                                         EXPECTED_HEAD[name])
                np.testing.assert_allclose(got, independent, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_passes_within_one_call_use_their_own_masks(name, exports):
    """Pass t of a T-pass call is the same network as pass t computed alone (and masks differ)."""
    exported = exports.get(name)
    images = np.random.default_rng(3).random((2, *exported.image_shape), dtype=np.float32)
    together = exported.passes(images, 9, 10, 6)
    alone = np.concatenate([exported.passes(images, 9, 10 + t, 1) for t in range(6)], axis=1)
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)
    assert len({together[0, t].tobytes() for t in range(6)}) == 6


def test_batchnorm_stays_in_inference_mode(exports):
    """With dropout off the graph is Keras inference, not Keras training mode (batch statistics)."""
    exported = exports.get("batchnorm_functional")
    model = exported.keras_model
    images = np.random.default_rng(4).random((8, *exported.image_shape), dtype=np.float32)
    dropout_layers = keras_dropout_layers(model)
    rates = [layer.rate for layer in dropout_layers]
    weights = model.get_weights()  # training mode updates the moving statistics
    try:
        for layer in dropout_layers:
            layer.rate = 0.0
        inference = np.asarray(model(images, training=False))
        batch_statistics = np.asarray(model(images, training=True))
    finally:
        for layer, rate in zip(dropout_layers, rates, strict=True):
            layer.rate = rate
        model.set_weights(weights)
    assert np.abs(inference - batch_statistics).max() > 0.05, "test model: BN modes should differ"
    # The MC mean lies near the dropout-free inference output, far from the batch-statistics one.
    mc_mean = exported.passes(images, 0, 0, 200).mean(axis=1)
    assert np.abs(mc_mean - inference).max() < np.abs(mc_mean - batch_statistics).max() / 2


# ---- 3. trunk caching -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_trunk_cache_equals_naive_graph(name, exports):
    cached, naive = exports.get(name, "cached"), exports.get(name, "input")
    assert naive.metadata.trunk == "input"
    images = np.random.default_rng(5).random((4, *cached.image_shape), dtype=np.float32)
    for seed, start, count in ((0, 0, 7), (123, 40, 3), (2**33 + 1, 2**31, 2)):
        for a, b in zip(cached.run(images, seed, start, count), naive.run(images, seed, start, count),
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


# name -> convolutions after the first dropout site, which run once per pass.
CONVS_AFTER_FIRST_SITE = {"mnist_cnn": 0, "mobilenet_nested": 0, "cnn_linear": 1,
                          "batchnorm_functional": 0, "spatial_dropout": 1}


@pytest.mark.parametrize("name", list(CONVS_AFTER_FIRST_SITE))
def test_cached_graph_tiles_after_the_trunk(name, exports):
    cached = exports.get(name, "cached").onnx_model.graph
    naive = exports.get(name, "input").onnx_model.graph
    assert tile_sources(naive) == ["images"]
    assert len(downstream(naive, {"images"})) > 0
    sources = tile_sources(cached)
    assert sources and "images" not in sources
    convs = [node for node in cached.node if node.op_type == "Conv"]
    assert [n.op_type for n in per_pass(cached)].count("Conv") == CONVS_AFTER_FIRST_SITE[name] < len(convs)
    assert [n.op_type for n in per_pass(naive)].count("Conv") == len(convs)


def test_mlp_with_input_dropout_tiles_the_images(exports):
    """The first site reads the images, so the frontier is the input itself."""
    assert tile_sources(exports.get("mlp_input_dropout").onnx_model.graph) == ["images"]


def test_memory_estimate_is_plausible(exports):
    meta = exports.get("mnist_cnn").metadata
    # The trunk's largest tensor is the 26x26x32 float convolution output.
    assert meta.bytes_per_image >= 26 * 26 * 32 * 4
    assert 0 < meta.bytes_per_image_pass < meta.bytes_per_image
    assert math.isfinite(meta.bytes_per_image_pass)
