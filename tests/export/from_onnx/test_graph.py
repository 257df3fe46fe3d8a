"""The ONNX front end on hand-built graphs: input layouts, heads, opsets, batch axes and every
dropout pattern it must turn into a site or refuse."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_graphs import classifier

from export.errors import ExportUsageError, ModelLoadError, UnsupportedModelError
from export.from_onnx import front
from export.from_onnx.loading import load
from export.options import ExportOptions


def build(model, **options):
    return front.build(model, ExportOptions(validation_passes=50, **options))


def test_nchw_logits_with_head_softmax():
    result = build(classifier(), head="softmax")
    meta = result.metadata
    assert (meta.layout, meta.input_shape, meta.output_kind, meta.num_outputs) == \
        ("NCHW", (None, 3, 4, 4), "probabilities", 3)
    assert (meta.source_format, meta.producer) == ("onnx", "onnx_graphs")
    assert [s.path for s in meta.dropout_sites] == ["drop0"]
    assert meta.dropout_sites[0].mask_shape == (12,) and meta.dropout_sites[0].rate == 0.5
    assert len(result.report) == 4 and "head: Softmax appended" in " ".join(result.rewrites)


def test_nhwc_input_is_read_as_nhwc():
    meta = build(classifier(shape=(None, 5, 6, 3)), head="softmax").metadata
    assert meta.layout == "NHWC"
    assert (meta.preprocessing.height, meta.preprocessing.width) == (5, 6)


def test_grayscale_nchw():
    meta = build(classifier(shape=(None, 1, 8, 8)), head="softmax").metadata
    assert (meta.layout, meta.preprocessing.color_mode) == ("NCHW", "grayscale")


def test_ambiguous_layout_needs_the_option():
    with pytest.raises(ExportUsageError, match="--layout NCHW"):
        build(classifier(shape=(None, 3, 4, 3)), head="softmax")
    assert build(classifier(shape=(None, 3, 4, 3)), head="softmax",
                 layout="NHWC").metadata.preprocessing.height == 3


def test_dynamic_size_needs_input_size():
    with pytest.raises(UnsupportedModelError, match="--input-size"):
        build(classifier(shape=(None, 3, None, None)), head="softmax")
    meta = build(classifier(shape=(None, 3, None, None)), head="softmax", input_size=(6, 5)).metadata
    assert meta.input_shape == (None, 3, 6, 5)
    with pytest.raises(ExportUsageError, match="fixed input size 4x4"):
        build(classifier(), head="softmax", input_size=(6, 5))


def test_flat_input():
    meta = build(classifier(shape=(None, 64)), head="softmax").metadata
    assert meta.input_shape == (None, 64)
    assert (meta.preprocessing.height, meta.preprocessing.color_mode) == (8, "grayscale")


@pytest.mark.parametrize(("head", "option", "kind", "classes"), [
    ("Softmax", None, "probabilities", 3), ("Sigmoid", None, "multilabel", 3),
    ("LogSoftmax", None, "probabilities", 3), (None, "multilabel", "multilabel", 3),
    (None, "linear", "values", 3), ("Softmax", "linear", "values", 3),
])
def test_heads(head, option, kind, classes):
    meta = build(classifier(head=head), head=option).metadata
    assert (meta.output_kind, meta.num_outputs) == (kind, classes)


def test_log_softmax_gets_an_exp():
    result = build(classifier(head="LogSoftmax"))
    assert any("Exp appended" in change for change in result.rewrites)


def test_one_logit_with_sigmoid_is_binary():
    meta = build(classifier(classes=1), head="sigmoid").metadata
    assert (meta.output_kind, meta.num_outputs, meta.head) == ("probabilities", 2, "sigmoid")


def test_logits_without_head_name_the_last_op_and_the_choices():
    with pytest.raises(UnsupportedModelError, match=r"ends in Gemm.*--head softmax.*--head linear"):
        build(classifier())


@pytest.mark.parametrize(("model", "option", "message"), [
    (classifier(head="Softmax"), "sigmoid", "already ends in Softmax"),
    (classifier(classes=3), "sigmoid", "--head multilabel"),
    (classifier(classes=1), "multilabel", "--head sigmoid"),
    (classifier(classes=1), "softmax", "--head sigmoid"),
])
def test_heads_that_do_not_fit(model, option, message):
    with pytest.raises(ExportUsageError, match=message):
        build(model, head=option)


def test_fixed_batch_is_refused():
    with pytest.raises(UnsupportedModelError, match="dynamic batch axis"):
        build(classifier(batch=1), head="softmax")


def test_old_opset_is_upgraded():
    result = build(classifier(opset=12), head="softmax")
    assert result.metadata.opset == 17
    assert any("opset 12 -> 17" in change for change in result.rewrites)


def test_inference_dropout_only_is_refused_with_the_recipe():
    with pytest.raises(UnsupportedModelError, match=r"inference mode.*TrainingMode.PRESERVE"):
        build(classifier(training=False), head="softmax")
    with pytest.raises(UnsupportedModelError, match="no Dropout node in training mode"):
        build(classifier(training=None), head="softmax")
    with pytest.raises(UnsupportedModelError, match="no Dropout node in training mode"):
        build(classifier(opset=11), head="softmax")  # Dropout-10 has no training mode


def test_zero_ratio_is_not_a_site():
    with pytest.raises(UnsupportedModelError, match="no Dropout node in training mode"):
        build(classifier(ratio=0.0), head="softmax")


def test_default_ratio_is_one_half():
    assert build(classifier(ratio=None), head="softmax").metadata.dropout_sites[0].rate == 0.5


@pytest.mark.parametrize(("what", "kwargs"), [
    ("training_mode comes from graph input 'training'", {"training": "input"}),
    ("ratio comes from graph input 'ratio'", {"ratio": "input"}),
])
def test_run_time_mode_or_ratio_is_refused(what, kwargs):
    # a second graph input is refused first; the message for a lone input names the dropout
    model = classifier(**kwargs)
    with pytest.raises(UnsupportedModelError, match="inputs"):
        build(model, head="softmax")
    from export.from_onnx import sites

    with pytest.raises(UnsupportedModelError, match=what):
        sites.find_dropouts(model.graph)


def test_computed_training_mode_is_refused():
    model = classifier(training=None)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    graph.node.insert(0, helper.make_node("Greater", ["one", "one"], ["computed"]))
    drop = next(n for n in graph.node if n.op_type == "Dropout")
    drop.input.append("computed")
    with pytest.raises(UnsupportedModelError, match="computed in the graph"):
        build(model, head="softmax")


def test_a_read_mask_output_is_refused():
    with pytest.raises(UnsupportedModelError, match="reads its mask output"):
        build(classifier(mask_read=True), head="softmax")


def test_random_ops_are_refused_naming_the_pattern():
    model = classifier(training=False)
    nodes = list(model.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.op_type == "Relu")
    nodes[at].output[0] = "r0"
    nodes[at + 1:at + 1] = [
        helper.make_node("RandomUniformLike", ["r0"], ["u"], name="rand"),
        helper.make_node("Greater", ["u", "ratio_0"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["keep_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["r0", "keep_f"], ["r"]),
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with pytest.raises(UnsupportedModelError, match=r"'rand'.*RandomUniformLike -> Greater -> Cast"):
        build(model, head="softmax")


def test_dropout_in_a_subgraph_is_refused():
    model = classifier(training=False)
    mode = numpy_helper.from_array(np.array(True), "inner_mode")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["inner_mode"], value=mode),
         helper.make_node("Dropout", ["r", "", "inner_mode"], ["inner"], name="inner_drop")],
        "branch", [], [helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)])
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    graph.node.insert(3, helper.make_node("If", ["cond"], ["branched"], name="if",
                                          then_branch=branch, else_branch=branch))
    with pytest.raises(UnsupportedModelError, match="'inner_drop' in training mode lies inside the "
                                                    "If node 'if'"):
        build(model, head="softmax")


def test_mc_layers_selects_nodes_and_the_rest_stay_identity():
    result = build(classifier(dropouts=2), head="softmax", mc_layers=("drop1",))
    assert [s.path for s in result.metadata.dropout_sites] == ["drop1"]
    assert "drop0: Dropout -> Identity (inference)" not in result.rewrites  # pruned as a site
    with pytest.raises(ExportUsageError, match=r"'nope' matches no Dropout.*drop0 \(Dropout 0.5\)"):
        build(classifier(dropouts=2), head="softmax", mc_layers=("nope",))


def test_two_sites():
    meta = build(classifier(dropouts=2), head="softmax").metadata
    assert [s.path for s in meta.dropout_sites] == ["drop0", "drop1"]


def test_two_inputs_are_refused():
    model = classifier()
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    with pytest.raises(UnsupportedModelError, match="2 inputs"):
        build(model, head="softmax")


def test_integer_input_is_refused():
    with pytest.raises(UnsupportedModelError, match="UINT8"):
        build(classifier(elem_type=TensorProto.UINT8), head="softmax")


def test_output_choice():
    model = classifier()
    model.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 12]))
    with pytest.raises(UnsupportedModelError, match="choose one with --output"):
        build(model, head="softmax")
    assert build(model, head="softmax", output="logits").metadata.num_outputs == 3
    with pytest.raises(UnsupportedModelError, match="no output 'nope'"):
        build(model, head="softmax", output="nope")


def test_keras_only_options_are_refused():
    with pytest.raises(ExportUsageError, match="--unsafe is for Keras"):
        build(classifier(), head="softmax", unsafe=True)


def test_files_that_are_not_onnx(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model" * 10)
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        load(tmp_path / "junk.onnx")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "missing.onnx")


def test_an_mcd_export_graph_is_not_exported_again(tmp_path):
    path = tmp_path / "mc.onnx"
    path.write_bytes(build(classifier(), head="softmax").model.SerializeToString())
    with pytest.raises(ModelLoadError, match="already an mcd-export graph"):
        load(path)


def test_the_source_is_not_modified():
    model = classifier()
    before = model.SerializeToString()
    build(model, head="softmax")
    assert model.SerializeToString() == before
    assert onnx.load_from_string(before).graph.input[0].name == "input"


def test_truncated_file(tmp_path):
    from paths import DATA

    data = (DATA / "torch" / "mlp.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        load(tmp_path / "cut.onnx")


def test_an_op_onnx_runtime_cannot_run():
    model = classifier()
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "Swish", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedModelError, match=r"ONNX Runtime cannot run the graph.*Swish"):
        build(model, head="softmax")


def test_a_graph_above_two_gib_is_refused(tmp_path, monkeypatch):
    from export import api

    monkeypatch.setattr(api, "serialized_size", lambda model: 3 * 2**30)
    with pytest.raises(UnsupportedModelError, match="2 GiB"):
        api.save(classifier(), tmp_path / "big.onnx")
    assert not (tmp_path / "big.onnx").exists()


def test_same_seed_same_bits_whatever_the_batch(tmp_path):
    import scorer

    path = tmp_path / "mc.onnx"
    path.write_bytes(build(classifier(shape=(None, 3, 8, 8)), head="softmax").model
                     .SerializeToString())
    images = np.random.default_rng(0).integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    whole = scorer.predict(path, images, passes=20, seed=4, device="cpu", save_passes=True)
    for batch_size in (1, 3):
        again = scorer.predict(path, images, passes=20, seed=4, device="cpu", save_passes=True,
                               batch_size=batch_size)
        np.testing.assert_array_equal(again["passes"], whole["passes"])
        np.testing.assert_array_equal(again["mean"], whole["mean"])
    other = scorer.predict(path, images, passes=20, seed=5, device="cpu")
    assert not np.array_equal(other["mean"], whole["mean"])
