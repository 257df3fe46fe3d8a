"""scorer.model.session: provider choice, quiet CUDA fallback, model checks, and the I/O-binding run path."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scorer_support import exported_model, plain_graph

from scorer.errors import DeviceError, ModelError
from scorer.model.session import CPU, CUDA, BoundRunner, open_session

CUDA_LISTED = CUDA in ort.get_available_providers()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return exported_model(tmp_path_factory, "digits")


def test_cpu_session_reports_cpu_provider(model, capfd):
    session = open_session(model, "cpu")
    assert session.provider == CPU
    assert session.session.get_providers() == [CPU]
    assert session.notice == "running on CPU"
    assert session.metadata.num_outputs == 10
    assert session.metadata.class_names == tuple(f"d{i}" for i in range(10))
    assert session.model_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(not CUDA_LISTED, reason="this onnxruntime does not list CUDA")
def test_auto_falls_back_to_cpu_quietly_when_cuda_cannot_load(model, capfd, monkeypatch):
    monkeypatch.delenv("MCD_SCORE_DEVICE", raising=False)  # auto as a user gets it
    session = open_session(model, "auto")
    captured = capfd.readouterr()
    if session.provider == CUDA:  # pragma: no cover - a machine with working CUDA
        pytest.skip("CUDA works here; the fallback cannot be observed")
    assert session.provider == CPU
    assert session.notice == "running on CPU"  # quiet: the reason is kept, not printed
    assert session.cuda_fallback and "\n" not in session.cuda_fallback
    # The reason is taken from ONNX Runtime's own message, not the generic placeholder.
    assert session.cuda_fallback != "the CUDA execution provider could not be created"
    assert captured.err == "", "ONNX Runtime's CUDA errors leaked to the real stderr"
    assert captured.out == ""


def test_auto_without_cuda_listed_uses_cpu_without_reason(model, monkeypatch, capfd):
    monkeypatch.delenv("MCD_SCORE_DEVICE", raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    session = open_session(model, "auto")
    assert session.provider == CPU
    assert session.notice == "running on CPU"
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(not CUDA_LISTED, reason="this onnxruntime does not list CUDA")
def test_device_cuda_when_cuda_cannot_load_is_an_error(model, capfd):
    try:
        session = open_session(model, "cuda")
    except DeviceError as error:
        message = str(error)
    else:  # pragma: no cover - a machine with working CUDA
        assert session.provider == CUDA
        pytest.skip("CUDA works here")
    assert "CUDA is not usable here" in message
    assert "--device cpu" in message
    assert capfd.readouterr().err == ""


def test_device_cuda_when_cuda_not_listed_is_an_error(model, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(DeviceError, match="no CUDA execution provider") as info:
        open_session(model, "cuda")
    assert "mcd-score[cuda]" in str(info.value)


def test_unknown_device_is_an_error(model):
    with pytest.raises(DeviceError, match="auto, cuda, cpu"):
        open_session(model, "tpu")


def test_model_without_metadata(tmp_path):
    path = tmp_path / "plain.onnx"
    plain_graph(path)
    with pytest.raises(ModelError) as info:
        open_session(path, "cpu")
    message = str(info.value)
    assert "plain.onnx" in message
    assert "'mcd_score' metadata" in message
    assert "mcd-export" in message


def test_model_with_unknown_schema_version(model, tmp_path):
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == "mcd_score":
            data = json.loads(prop.value)
            data["schema_version"] = 99
            prop.value = json.dumps(data)
    path = tmp_path / "future.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ModelError) as info:
        open_session(path, "cpu")
    message = str(info.value)
    assert "schema version 99" in message
    assert "reads version 1" in message
    assert "re-export" in message


def test_model_with_metadata_but_not_an_mcd_graph(model, tmp_path):
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    path = tmp_path / "borrowed.onnx"
    plain_graph(path, props)
    with pytest.raises(ModelError, match=r"lacks the graph inputs \['images', 'seed', 'pass_start', "
                                         r"'pass_count'\]"):
        open_session(path, "cpu")


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist") as info:
        open_session(tmp_path / "nowhere.onnx", "cpu")
    assert "MCD_SCORE_MODEL" in str(info.value)


def test_not_an_onnx_file(tmp_path, capfd):
    path = tmp_path / "model.onnx"
    path.write_text("this is not a protobuf\n", encoding="utf-8")
    with pytest.raises(ModelError, match="not a loadable ONNX model") as info:
        open_session(path, "cpu")
    assert "model.onnx" in str(info.value)
    assert info.value.__cause__ is not None
    assert capfd.readouterr().err == ""


def test_bound_run_equals_plain_run(model):
    session = open_session(model, "cpu")
    images = np.random.default_rng(3).random((5, 16, 16, 1), dtype=np.float32)
    outputs = ["passes", *session.stat_outputs()]
    plain = session.run(images, seed=4, pass_start=2, pass_count=7, outputs=outputs)
    session.bound = True
    runner = session.runner(images)  # the images bound once, for several chunks
    assert isinstance(runner, BoundRunner)
    bound = runner(4, 2, 7, outputs)
    assert list(bound) == outputs
    again = runner(4, 0, 3, outputs)  # another chunk through the same binding
    np.testing.assert_array_equal(again["passes"], session.run(images, 4, 0, 3, outputs)["passes"])
    for value in bound.values():  # the arrays ONNX Runtime wrote into are owned by numpy
        assert value.flags.owndata
    assert plain["passes"].shape == (5, 7, 10)
    for name in outputs:
        np.testing.assert_array_equal(bound[name], plain[name], err_msg=name)
    # and the reduced outputs are the sums of the per-pass outputs (hand check of the graph)
    np.testing.assert_allclose(bound["pass_sum"], plain["passes"].sum(axis=1), atol=1e-5)
    votes = np.stack([np.bincount(row, minlength=10) for row in plain["passes"].argmax(axis=2)])
    np.testing.assert_array_equal(bound["votes"], votes)


def test_run_goes_through_binding_on_cuda(model, monkeypatch):
    """A session that believes it is on CUDA binds its images for the GPU once per batch (checked
    on the CPU, the device swapped for the CPU's)."""
    from scorer.model import session as session_module

    session = open_session(model, "cpu")
    images = np.random.default_rng(5).random((2, 16, 16, 1), dtype=np.float32)
    expected = session.run(images, 0, 0, 3, ["pass_sum"])
    devices = []

    class Recording(BoundRunner):
        def __init__(self, scoring, images, device):
            devices.append(device)
            super().__init__(scoring, images, "cpu")

    monkeypatch.setattr(session_module, "BoundRunner", Recording)
    session.provider = CUDA
    runner = session.runner(images)
    got = [runner(0, 0, 3, ["pass_sum"]), runner(0, 3, 2, ["pass_sum"])]
    assert devices == ["cuda"]  # one binding for both chunks
    np.testing.assert_array_equal(got[0]["pass_sum"], expected["pass_sum"])


def with_metadata(model, tmp_path, change) -> object:
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key == "mcd_score":
            data = json.loads(prop.value)
            change(data)
            prop.value = json.dumps(data)
    path = tmp_path / "edited.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(num_outputs=5, class_names=None), "num_outputs 5 in the metadata, 10 in the graph"),
    (lambda d: d.update(input_shape=[None, 20, 20, 1]), "input shape [None, 20, 20, 1] in the metadata"),
    (lambda d: d["preprocessing"].update(color_mode="rgb"), "gives 16x16x3 values per image"),
    (lambda d: d["preprocessing"].update(scale=float("nan")), "non-finite preprocessing"),
    (lambda d: d.update(output_kind="multilabel"), "needs graph outputs ['label_entropy_sum']"),
])
def test_metadata_that_does_not_match_the_graph_is_refused(model, tmp_path, change, message):
    """Metadata that disagrees with the graph (or a NaN scale) is a ModelError that says to re-export,
    not a traceback or NaN metrics with status ok."""
    path = with_metadata(model, tmp_path, change)
    with pytest.raises(ModelError) as info:
        open_session(path, "cpu")
    assert message in str(info.value) and "re-export" in str(info.value)


def test_without_pad_fusion_zero_padding_before_max_pool_stays_zero(tmp_path):
    """ONNX Runtime 1.31's Pad_Fusion turns Pad(0) -> MaxPool into MaxPool's -inf padding; a graph
    with that pattern (exported before export.rewrites.pad_pool) must still give max(0, x) at the border."""
    from onnx import TensorProto, helper, numpy_helper

    from scorer.model.session import SCHEMA_1_DISABLED_OPTIMIZERS

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    graph = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["p"]),
                               helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3])],
                              "g", [x], [y], [pads])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=SCHEMA_1_DISABLED_OPTIMIZERS)
    out = session.run(None, {"x": -np.ones((1, 1, 4, 4), np.float32)})[0]
    assert out[0, 0, 0, 0] == 0.0  # the padded zero wins over -1 (with Pad_Fusion on: -1)


@pytest.mark.parametrize(("schema", "disabled"), [(2, []), (1, ["Pad_Fusion"])])
def test_pad_fusion_is_off_only_for_graphs_exported_before_export_pad_pool(model, tmp_path,
                                                                          monkeypatch, schema,
                                                                          disabled):
    """Schema 1 graphs may hold Pad -> MaxPool, which Pad_Fusion gets wrong; newer graphs do not,
    and keep Pad_Fusion (it folds the pads before MobileNetV2's convolutions: 30% of its rate)."""
    import scorer.model.session

    created = []

    class Recording(ort.InferenceSession):
        def __init__(self, *args, disabled_optimizers=(), **kwargs):
            created.append(list(disabled_optimizers))
            super().__init__(*args, disabled_optimizers=disabled_optimizers, **kwargs)

    monkeypatch.setattr(scorer.model.session.ort, "InferenceSession", Recording)
    path = with_metadata(model, tmp_path, lambda data: data.update(schema_version=schema))
    session = open_session(path, "cpu")
    assert session.metadata.schema_version == schema and created[-1] == disabled


class LateFailingCuda:
    """A session that opened "on CUDA" but fails at its first run, as one whose cuDNN loads
    lazily and is missing (the real CPU session underneath answers everything else)."""

    def __init__(self, real):
        self.real = real

    def get_providers(self):
        return [CUDA, CPU]

    def run_with_iobinding(self, binding, *args):
        raise RuntimeError("CUDNN failure 4: CUDNN_STATUS_NOT_INITIALIZED; libcudnn_cnn.so.9: "
                           "cannot open shared object file")

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def late_failing_cuda(monkeypatch):
    from scorer.model import session as session_module

    made = []
    original = session_module._new_session

    def new_session(data, options, providers, model, disabled=()):
        real = original(data, options, [CPU], model, disabled)
        made.append([p if isinstance(p, str) else p[0] for p in providers])
        return LateFailingCuda(real) if len(made) == 1 and CUDA in made[0] else real

    class CpuBound(BoundRunner):
        def __init__(self, scoring, images, device):
            super().__init__(scoring, images, "cpu")

    monkeypatch.setattr(session_module, "_new_session", new_session)
    monkeypatch.setattr(session_module, "BoundRunner", CpuBound)
    monkeypatch.setattr(session_module.ort, "get_available_providers",
                        lambda: [CUDA, CPU])
    monkeypatch.delenv("MCD_SCORE_DEVICE", raising=False)
    return made


def test_a_cuda_session_that_fails_at_its_first_run_falls_back_under_auto(model, late_failing_cuda):
    session = open_session(model, "auto")
    assert session.provider == CPU and not session.on_cuda
    assert "failed on its first image" in session.cuda_fallback
    assert "libcudnn_cnn.so.9" in session.cuda_fallback
    assert late_failing_cuda == [[CUDA, CPU], [CPU]]  # the CPU session replaced the CUDA one
    images = np.zeros((1, 16, 16, 1), np.float32)
    assert session.run(images, 0, 0, 2, ["pass_sum"])["pass_sum"].shape == (1, 10)


def test_a_cuda_session_that_fails_at_its_first_run_is_an_error_under_cuda(model, late_failing_cuda):
    with pytest.raises(DeviceError, match=r"failed on its first image.*libcudnn_cnn.so.9"):
        open_session(model, "cuda")


def test_cuda_options_turn_tf32_off_and_cap_the_arena():
    from scorer.model.session import cuda_options

    assert cuda_options() == {"device_id": "0", "use_tf32": "0"}
    assert cuda_options(tf32=True, max_memory_mb=512) == {
        "device_id": "0", "use_tf32": "1", "gpu_mem_limit": str(512 * 2**20)}


def test_the_device_variable_decides_what_auto_means(model, monkeypatch):
    from scorer.model.session import resolve_device

    monkeypatch.setenv("MCD_SCORE_DEVICE", "cpu")
    assert resolve_device("auto") == "cpu" and resolve_device("cuda") == "cuda"
    monkeypatch.setenv("MCD_SCORE_DEVICE", "tpu")
    with pytest.raises(DeviceError, match="MCD_SCORE_DEVICE"):
        open_session(model, "auto")
    monkeypatch.delenv("MCD_SCORE_DEVICE")
    assert resolve_device("auto") == "auto"


def test_provider_options_are_recorded(model):
    session = open_session(model, "cpu")
    assert isinstance(session.provider_options, dict)
