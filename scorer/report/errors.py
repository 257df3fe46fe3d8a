"""Typed errors of ``mcd-score report``.

:class:`ReportUsageError` and its subclasses are the user's to fix (exit code 2); failures are
:class:`scorer.errors.ScorerError` (exit code 1).
"""

from scorer.errors import ScorerUsageError


class ReportUsageError(ScorerUsageError):
    """Bad input or options the user must fix (exit code 2)."""


class ResultsFileError(ReportUsageError):
    """The results file is missing, unreadable or lacks a dataset the report needs."""


class MissingDependencyError(ReportUsageError):
    """An optional package the report needs (matplotlib) is not installed."""
