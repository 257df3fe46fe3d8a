"""Score image folders with an mcd-export ONNX graph and write MC dropout uncertainty to HDF5.

This package never imports TensorFlow.
"""
