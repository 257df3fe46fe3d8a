"""The in-graph masks: equal to their numpy twin, statistically sound, and Keras' dropout on average.

Probe models ``Input -> Dropout -> Dense(identity kernel, no bias, linear)`` fed with ones reveal
the exact mask the ONNX graph applies: ``passes[0, t]`` is the mask of pass ``t``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from export.rewrites.hashing import normal_np, uniform_np
from export.rewrites.masks import mask_values_np
from scorer.contract import DropoutSite

UNITS = 1024  # 32x32 flat input
Z = 5.0  # standard errors allowed in every statistical check


def probe_model(layer):
    from export.from_keras.backend import keras
    model = keras.Sequential([
        keras.Input((UNITS,)),
        layer,
        keras.layers.Dense(UNITS, use_bias=False, activation=None),
    ])
    model.layers[-1].set_weights([np.eye(UNITS, dtype=np.float32)])
    return model


@pytest.fixture(scope="module")
def probes():
    """``{kind: (keras model, ExportResult)}`` for Dropout(0.3) and GaussianDropout(0.3) probes."""
    from export.api import ExportOptions, build
    from export.from_keras.backend import keras

    made = {}
    options = ExportOptions(validation_passes=20)
    for kind, layer in (("dropout", keras.layers.Dropout(0.3)),
                        ("gaussian_dropout", keras.layers.GaussianDropout(0.3))):
        model = probe_model(layer)
        made[kind] = (model, build(model, options))
    return made


def graph_masks(probes, kind: str, seed: int, start: int, count: int) -> np.ndarray:
    from exports import feeds, ort_session

    _, result = probes[kind]
    session = ort_session(result.model)
    ones = np.ones((1, UNITS), np.float32)
    return session.run(["passes"], feeds(ones, seed, start, count))[0][0]


def correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson correlation of two flattened samples and its standard error under independence."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1]), 1.0 / math.sqrt(a.size)


# ---- the numpy twin is what the graph applies -----------------------------------------------------


@pytest.mark.parametrize("seed, start", [(0, 0), (7, 1000), (2**32 + 5, 3), (2**63 - 1, 2**31 - 2)])
def test_graph_masks_equal_numpy_twin(probes, seed, start):
    _, result = probes["dropout"]
    site = result.metadata.dropout_sites[0]
    assert (site.kind, site.rate, site.mask_shape) == ("dropout", pytest.approx(0.3), (UNITS,))
    assert (site.layer_class, site.path, site.drop_path) == ("Dropout", site.name, False)
    got = graph_masks(probes, "dropout", seed, start, 16)
    want, add = mask_values_np(site, 0, seed, np.arange(start, start + 16))
    assert add is None
    assert np.array_equal(got, want)
    assert set(np.unique(got)) == {0.0, np.float32(1 / 0.7)}


@pytest.mark.parametrize("seed, start", [(0, 0), (2**40 + 3, 77)])
def test_gaussian_graph_masks_equal_numpy_twin(probes, seed, start):
    _, result = probes["gaussian_dropout"]
    site = result.metadata.dropout_sites[0]
    got = graph_masks(probes, "gaussian_dropout", seed, start, 16)
    want, _ = mask_values_np(site, 0, seed, np.arange(start, start + 16))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_graph_keep_rate_with_a_million_samples(probes):
    masks = graph_masks(probes, "dropout", 123, 0, 1000)  # 1000 passes x 1024 units
    kept = masks > 0
    n, rate = kept.size, 0.3
    assert n >= 1_000_000
    standard_error = math.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) < Z * standard_error
    np.testing.assert_allclose(masks[kept], 1 / 0.7, rtol=1e-6)


def test_pass_chunks_have_the_same_masks(probes):
    whole = graph_masks(probes, "gaussian_dropout", 5, 0, 12)
    parts = np.concatenate([graph_masks(probes, "gaussian_dropout", 5, s, c)
                            for s, c in ((0, 5), (5, 1), (6, 6))])
    np.testing.assert_array_equal(parts, whole)


# ---- statistics of the generator (numpy twin, cross-checked above) --------------------------------


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.8])
def test_keep_rate_is_one_minus_p(rate):
    site = DropoutSite("d", "dropout", rate, (2000,))
    mul, _ = mask_values_np(site, 0, seed=int(rate * 1000), passes=np.arange(4000))  # 8e6 samples
    kept = mul > 0
    n = kept.size
    standard_error = math.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) < Z * standard_error
    # Z standard errors is far below the 1% relative bias the check must detect.
    assert Z * standard_error < 0.01 * (1 - rate) / 2
    np.testing.assert_allclose(mul[kept], 1 / (1 - rate), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2**32])
def test_no_correlation_between_passes_units_sites_seeds(seed):
    passes, size = np.arange(1000), 2000
    u = uniform_np(seed, 0, passes, size)
    pairs = {
        "pass t vs t+1": (u[:-1], u[1:]),
        "pass t vs t+2": (u[:-2], u[2:]),
        "pass t vs t+16": (u[:-16], u[16:]),
        "unit i vs i+1": (u[:, :-1], u[:, 1:]),
        "unit i vs i+2": (u[:, :-2], u[:, 2:]),
        "unit i vs i+256": (u[:, :-256], u[:, 256:]),
        "site 0 vs site 1": (u, uniform_np(seed, 1, passes, size)),
        "site 0 vs site 7": (u, uniform_np(seed, 7, passes, size)),
        "seed vs seed+1": (u, uniform_np(seed + 1, 0, passes, size)),
        "pass t unit i vs pass t+1 unit i+1": (u[:-1, :-1], u[1:, 1:]),
    }
    for what, (a, b) in pairs.items():
        r, standard_error = correlation(a, b)
        assert abs(r) < Z * standard_error, f"{what}: correlation {r:.2e}"
        # The keep decisions, not only the uniforms.
        r, standard_error = correlation(a >= 0.5, b >= 0.5)
        assert abs(r) < Z * standard_error, f"{what}: keep correlation {r:.2e}"


@pytest.mark.parametrize("rate", [0.5, 0.1])
def test_no_correlation_between_any_two_passes(rate):
    """Each pair of passes, not only on average: the correlation of their keep decisions.

    A near-linear generator passes the averaged checks above (pairs correlate with random signs)
    but not this one.
    """
    units, passes = 4000, 300
    keep = (uniform_np(5, 2, np.arange(passes), units) >= rate).astype(np.float64)
    keep = (keep - keep.mean(axis=1, keepdims=True)) / keep.std(axis=1, keepdims=True)
    z = (keep @ keep.T / units * math.sqrt(units))[np.triu_indices(passes, 1)]
    # Under independence z is close to standard normal for each of the 44850 pairs.
    assert abs(z.std() - 1.0) < Z * math.sqrt(2 / z.size) + 0.01
    assert np.abs(z).max() < 6.0


def test_uniform_passes_chi_square_bucket_tests():
    u = uniform_np(42, 3, np.arange(500), 2000)  # 1e6 samples
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.bincount((u.ravel() * 1000).astype(np.int64), minlength=1000)
    assert stats.chisquare(counts).pvalue > 1e-6
    # Serial test: pairs of neighbouring units in a 32x32 grid.
    a, b = (u[:, 0::2] * 32).astype(np.int64), (u[:, 1::2] * 32).astype(np.int64)
    pairs = np.bincount((a * 32 + b).ravel(), minlength=1024)
    assert stats.chisquare(pairs).pvalue > 1e-6
    # Low-order bits of the 24-bit value are as uniform as the high ones.
    low = (u.ravel() * 2**24).astype(np.int64) % 256
    assert stats.chisquare(np.bincount(low, minlength=256)).pvalue > 1e-6


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_gaussian_dropout_multiplier_mean_one_variance_p_over_1_minus_p(rate):
    site = DropoutSite("g", "gaussian_dropout", rate, (2000,))
    mul, add = mask_values_np(site, 0, seed=9, passes=np.arange(600))
    assert add is None
    values = mul.ravel().astype(np.float64)
    n, variance = values.size, rate / (1 - rate)
    assert abs(values.mean() - 1.0) < Z * math.sqrt(variance / n)
    assert abs(values.var() - variance) < Z * variance * math.sqrt(2 / n)
    z = (values - 1.0) / math.sqrt(variance)
    assert abs(stats.skew(z)) < Z * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < Z * math.sqrt(24 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-6


def test_normal_stream_is_not_the_uniform_stream():
    u = uniform_np(3, 0, np.arange(300), 1000)
    z = normal_np(3, 0, np.arange(300), 1000)
    r, standard_error = correlation(u, z)
    assert abs(r) < Z * standard_error


def test_alpha_dropout_keeps_mean_and_variance():
    """Keras' AlphaDropout affine correction: mean 0 and variance 1 inputs stay so."""
    site = DropoutSite("a", "alpha_dropout", 0.2, (2000,))
    mul, add = mask_values_np(site, 0, seed=4, passes=np.arange(500))
    x = np.random.default_rng(0).standard_normal(mul.shape)
    y = x * mul + add
    n = y.size
    assert abs(y.mean()) < Z * math.sqrt(1 / n) * 2
    assert abs(y.var() - 1.0) < 0.01


# ---- the MC mean agrees with Keras' own dropout ---------------------------------------------------

MC_MODELS = ["mnist_cnn", "cnn_linear", "mlp_input_dropout", "binary_sigmoid_cnn",
             "batchnorm_functional", "spatial_dropout", "gaussian_dropout", "alpha_dropout",
             "noise_shape_dropout"]
MC_PASSES = 2000


@pytest.mark.parametrize("name", MC_MODELS)
def test_mc_mean_and_spread_agree_with_keras_dropout(name, exports):
    from export.from_keras.reference import keras_dropout_passes

    exported = exports.get(name)
    images = np.random.default_rng(8).random((3, *exported.image_shape), dtype=np.float32)
    ours = exported.passes(images, 17, 0, MC_PASSES).astype(np.float64)
    head = exported.head()
    theirs = keras_dropout_passes(exported.keras_model, images, head,
                                  exported.metadata.dropout_sites, MC_PASSES)
    if head.activation == "sigmoid" and head.width == 1:
        theirs = np.concatenate([1.0 - theirs, theirs], axis=-1)
    theirs = theirs.astype(np.float64)
    assert ours.shape == theirs.shape

    standard_error = np.sqrt((ours.var(axis=1) + theirs.var(axis=1)) / MC_PASSES) + 1e-9
    z = np.abs(ours.mean(axis=1) - theirs.mean(axis=1)) / standard_error
    assert z.max() < Z, f"MC means differ by {z.max():.1f} standard errors"

    # Spread: log variance ratio, its standard error from each sample's kurtosis.
    var_ours, var_theirs = ours.var(axis=1), theirs.var(axis=1)
    visible = (var_ours > 1e-10) & (var_theirs > 1e-10)
    assert visible.any()
    kurt_ours = stats.kurtosis(ours, axis=1, fisher=False)
    kurt_theirs = stats.kurtosis(theirs, axis=1, fisher=False)
    log_ratio = np.log(var_ours[visible] / var_theirs[visible])
    log_error = np.sqrt((kurt_ours[visible] - 1 + kurt_theirs[visible] - 1) / MC_PASSES)
    worst = np.max(np.abs(log_ratio) / log_error)
    assert worst < Z, f"MC variances differ by {worst:.1f} standard errors"
