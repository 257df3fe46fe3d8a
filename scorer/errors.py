"""Typed errors raised by the scorer.

:class:`ScorerUsageError` and its subclasses are the user's to fix (exit code 2); other
:class:`ScorerError` are failures (exit code 1).
"""


class ScorerError(Exception):
    """Scoring failed (exit code 1)."""


class ScorerUsageError(ScorerError):
    """Bad input, options or environment that the user must fix (exit code 2)."""


class ModelError(ScorerUsageError):
    """The model is missing, unreadable or not an mcd-export graph."""


class DeviceError(ScorerUsageError):
    """The requested execution device is not available."""


class InputError(ScorerUsageError):
    """The image folder or file list is missing or empty."""


class OutputError(ScorerUsageError):
    """The output file exists, cannot be written, or does not match a resumed run."""


class ImageError(Exception):
    """One image could not be read; becomes a failed row, never stops the run.

    ``reason`` is the short status string written to the ``status`` dataset.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
