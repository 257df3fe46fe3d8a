"""Names shared by the converter (TensorFlow side) and the graph rewrites (pure ONNX side)."""

MUL_INPUT = "mcd_mul_{}"
ADD_INPUT = "mcd_add_{}"
PASSES_1D = "mcd/passes_1d"  # int64 [1] tensor holding T, made by export.stochastic
