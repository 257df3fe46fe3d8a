"""Typed errors raised by the exporter."""


class ExportError(Exception):
    """The export failed (exit code 1)."""

    exit_code = 1


class ExportUsageError(ExportError):
    """The user asked for something impossible or ambiguous (exit code 2)."""

    exit_code = 2


class ModelLoadError(ExportUsageError):
    """The model file is missing, corrupt or needs ``--unsafe``."""


class UnsupportedModelError(ExportUsageError):
    """The model has a shape, head or layer the exporter cannot turn into an MC dropout graph."""


class ValidationError(ExportError):
    """The exported graph does not reproduce the Keras model."""
