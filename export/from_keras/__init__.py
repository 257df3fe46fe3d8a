"""The Keras side of the exporter: load a model, read it, convert it with its masks as inputs.

``backend`` imports TensorFlow, Keras and tf2onnx once (the only place that does); ``loading``
reads model files; ``model`` finds layers, the input and the head; ``sites`` finds the dropout
layers and their mask shapes; ``preprocessing`` decides how pixels are fed; ``convert`` traces
the model with each site's mask as a graph input; ``unsupported`` names the layers tf2onnx
could not convert; ``reference`` runs Keras for the checks; ``front`` puts them together and hands
the converted graph to :mod:`export.assemble`.

May import: :mod:`export.assemble` (the steps every export shares), :mod:`export.options`,
:mod:`export.preprocessing`, :mod:`export.rewrites` (the passes the converted graph needs),
:mod:`export.errors` and :mod:`scorer.contract`.
"""
