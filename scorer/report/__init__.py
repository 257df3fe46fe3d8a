"""``mcd-score report``: one self-contained HTML page and a JSON summary from a results file.

Library entry point::

    from scorer.report import ReportOptions, write_report
    summary = write_report(Path("out.h5"), Path("report.html"), ReportOptions(ood_labels=("ood",)))
    summary.numbers["ood"]["measures"]["mutual_information"]["auroc"]

Modules: ``load`` (the file, through the one reader :mod:`scorer.results.reader`), ``columns``
(per-row columns, streamed), ``numbers`` (pure metrics), ``analysis`` (sections and the JSON
summary), ``figures`` (matplotlib), ``thumbs`` (galleries), ``page`` (HTML), ``api``
(:func:`write_report`). The command is :mod:`scorer.cli.report`. matplotlib is imported only when
the page is drawn. May import :mod:`scorer.results`, :mod:`scorer.atomic` (writing the
page), :mod:`scorer.contract` and :mod:`scorer.errors`.
"""

from scorer.report.api import write_report
from scorer.report.options import ReportOptions, ReportSummary

__all__ = ["ReportOptions", "ReportSummary", "write_report"]
