"""Names shared by the converter (TensorFlow side) and the graph rewrites (pure ONNX side)."""

MUL_INPUT = "mcd_mul_{}"
ADD_INPUT = "mcd_add_{}"
