"""Typed errors raised by the scorer, and the exit code each one means on the command line.

:class:`ScorerUsageError` and its subclasses are the user's to fix (exit code 2); other
:class:`ScorerError` are failures (exit code 1), except :class:`OutputWriteError` (4: the output
could not be written, the run resumes once that is fixed) and :class:`ScoreInterrupted` (130).
"""


class ScorerError(Exception):
    """Scoring failed (exit code 1)."""

    exit_code = 1


class ScorerUsageError(ScorerError):
    """Bad input, options or environment that the user must fix (exit code 2)."""

    exit_code = 2


class ModelError(ScorerUsageError):
    """The model is missing, unreadable or not an mcd-export graph."""


class DeviceError(ScorerUsageError):
    """The requested execution device is not available."""


class InputError(ScorerUsageError):
    """The image folder or file list is missing, empty or names files outside the folder."""


class OutputError(ScorerUsageError):
    """The output file exists, is locked by a running job, or does not match a resumed run."""


class OutputWriteError(ScorerError):
    """Writing the output failed (full disk, quota, I/O error); committed rows are kept (exit 4)."""

    exit_code = 4


class ScoreInterrupted(ScorerError):
    """Ctrl-C or SIGTERM: the committed rows are kept; ``--resume`` continues (exit 130)."""

    exit_code = 130
    cli_prefix = "mcd-score: "  # not an error: the run stopped where it was asked to


class ImageError(Exception):
    """One image could not be read; becomes a failed row, never stops the run.

    ``reason`` is the short status code written to the ``status`` dataset; ``detail`` the words
    written to ``reason``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
