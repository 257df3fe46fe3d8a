"""Every op of the exported graphs has a kernel in ONNX Runtime's CUDA execution provider.

No GPU needed: the CUDA provider library shipped in the onnxruntime-gpu wheel names its kernel
classes in its C++ type-info strings, e.g. ``N11onnxruntime4cuda3MulIjEE`` is ``cuda::Mul<uint32>``
and ``N11onnxruntime4cuda4TileE`` the non-templated ``cuda::Tile``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto
from zoo_models import ZOO

# ONNX op -> CUDA kernel class, where the names differ.
KERNEL_CLASS = {
    "MaxPool": "Pool",
    "AveragePool": "Pool",
    "GlobalAveragePool": "Pool",
    "GlobalMaxPool": "Pool",
    "BatchNormalization": "BatchNorm",
    "Identity": "IdentityOp",
    "Max": "VariadicElementwiseOp",  # VariadicElementwiseOp<variadic_elementwise_ops::Max, ...>
    "Min": "VariadicElementwiseOp",
    "Sum": "VariadicElementwiseOp",
}
# Ops whose CUDA kernel reuses a provider-independent class (``onnxruntime::Shape``).
SHARED_CLASSES = {"Shape", "Size"}
# Mangled codes of template type arguments.
TYPE_CODES = {
    TensorProto.FLOAT: "f", TensorProto.DOUBLE: "d", TensorProto.INT32: "i", TensorProto.INT64: "l",
    TensorProto.UINT32: "j", TensorProto.UINT64: "m", TensorProto.BOOL: "b", TensorProto.UINT8: "h",
    TensorProto.INT8: "a", TensorProto.INT16: "s", TensorProto.UINT16: "t",
}
FORBIDDEN = {"BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"}
MASK_ARITHMETIC = {"Add", "Mul", "Div", "Sub"}  # on uint32 and uint64 in the mask generator


def cuda_library() -> Path | None:
    import onnxruntime

    path = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    return path if path.exists() else None


def parse_kernel_classes(data: bytes) -> dict[tuple[str, str], set[str]]:
    """``{(namespace, class): first template argument codes}`` from type-info strings.

    ``""`` in the set stands for a non-templated class; other codes are the mangled first template
    argument's first character (``j`` for uint32, ``N`` for a nested name, ``L`` for a literal).
    """
    classes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for match in re.finditer(rb"\x00N11onnxruntime(4cuda)?(\d+)", data):
        length, start = int(match.group(2)), match.end()
        name = data[start:start + length]
        if not re.fullmatch(rb"[A-Za-z_][A-Za-z0-9_]*", name):
            continue
        namespace = "cuda" if match.group(1) else "onnxruntime"
        follow = data[start + length:start + length + 2]
        code = chr(follow[1]) if follow[:1] == b"I" else ""
        classes[(namespace, name.decode())].add(code)
    return classes


@pytest.fixture(scope="module")
def cuda_kernels() -> dict[tuple[str, str], set[str]]:
    path = cuda_library()
    if path is None:
        pytest.skip("onnxruntime-gpu's CUDA provider library is not installed")
    return parse_kernel_classes(path.read_bytes())


def test_parser_reads_known_kernels(cuda_kernels):
    assert "j" in cuda_kernels[("cuda", "Mul")]
    assert "" in cuda_kernels[("cuda", "Tile")]
    assert "" in cuda_kernels[("onnxruntime", "Shape")]
    assert ("cuda", "BitShift") not in cuda_kernels
    assert not any(name.startswith("Bitwise") for _, name in cuda_kernels)


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                nodes.extend(all_nodes(sub))
    return nodes


def input_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        types[info.name] = info.type.tensor_type.elem_type
    return types


@pytest.mark.parametrize("name", ["mnist_cnn", "mobilenet_nested", "gaussian_dropout"])
def test_every_op_has_a_cuda_kernel(name, exports, cuda_kernels):
    assert_cuda_kernels(exports.get(name).onnx_model, cuda_kernels)


@pytest.mark.parametrize(("name", "options"), [
    ("mlp", {"head": "softmax"}), ("cnn_dynamo", {"head": "softmax"}), ("mobilenet_v3", {}),
])
def test_every_op_of_the_pytorch_exports_has_a_cuda_kernel(name, options, cuda_kernels):
    from paths import DATA

    from export.from_onnx import front
    from export.options import ExportOptions

    source = front.load(DATA / "torch" / f"{name}.onnx")
    exported = front.build(source, ExportOptions(validate=False, **options))
    assert_cuda_kernels(exported.model, cuda_kernels)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_every_op_of_the_zoo_has_a_cuda_kernel(name, zoo, cuda_kernels):
    assert_cuda_kernels(zoo.get(name).onnx_model, cuda_kernels)


def assert_cuda_kernels(model: onnx.ModelProto, cuda_kernels) -> None:
    """Every node (subgraphs included) has a CUDA kernel for its first input's type."""
    types = input_types(model)
    missing, untyped = set(), set()
    unsigned_arithmetic = {TensorProto.UINT32: 0, TensorProto.UINT64: 0}
    for node in all_nodes(model.graph):
        assert node.op_type not in FORBIDDEN
        assert node.domain in ("", "ai.onnx")
        if node.op_type in SHARED_CLASSES:
            key = ("onnxruntime", node.op_type)
        else:
            key = ("cuda", KERNEL_CLASS.get(node.op_type, node.op_type))
        if key not in cuda_kernels:
            missing.add(node.op_type)
            continue
        codes = cuda_kernels[key]
        dtype = types.get(node.input[0])
        if dtype is None:
            untyped.add(node.op_type)
            continue
        if codes & set(TYPE_CODES.values()) and TYPE_CODES.get(dtype) not in codes:
            missing.add(f"{node.op_type}<{TensorProto.DataType.Name(dtype)}>")
        if node.op_type in MASK_ARITHMETIC and dtype in unsigned_arithmetic:
            unsigned_arithmetic[dtype] += 1
            assert TYPE_CODES[dtype] in codes
    assert not missing, f"ops without a CUDA kernel: {sorted(missing)}"
    # The mask generator's integer arithmetic was found (and checked above).
    assert unsigned_arithmetic[TensorProto.UINT64] >= 20
    assert unsigned_arithmetic[TensorProto.UINT32] >= 1
    assert not untyped, f"could not infer input types of {sorted(untyped)}"


@pytest.mark.parametrize("name", ["alpha_dropout", "spatial_dropout", "noise_shape_dropout",
                                  "batchnorm_functional", "binary_sigmoid_cnn"])
def test_no_bit_ops_in_other_graphs(name, exports):
    ops = {node.op_type for node in exports.get(name).onnx_model.graph.node}
    assert not FORBIDDEN & ops


def test_kernel_parse_of_a_synthetic_library():
    data = (b"\x00N11onnxruntime4cuda3MulIjEE\x00N11onnxruntime4cuda4TileE\x00"
            b"_ZN11onnxruntime4cuda3XorIjEE\x00N11onnxruntime5ShapeE\x00")
    classes = parse_kernel_classes(data)
    assert classes == {("cuda", "Mul"): {"j"}, ("cuda", "Tile"): {""},
                       ("onnxruntime", "Shape"): {""}}
