"""mcd-score: Monte Carlo dropout uncertainty for every image of a folder, from an mcd-export graph.

Public API (imported on first use, so ``import scorer`` stays light)::

    from scorer import ScoreOptions, score, read_results, compare_results
    from scorer import predict, iter_predict, open_model, Predictions   # images in memory
    from scorer import plots                                            # figures (matplotlib)

``scoring`` scores files into a results file; ``predicting`` scores arrays into
``predictions.Predictions``; both run the same ``engine`` over the stages ``images`` -> ``model``
-> ``metrics``, with ``rundir`` and ``results`` keeping what a run writes; ``report`` and
``distributed`` build on them; ``cli`` is the command line.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mcd-score")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {
    "score": "scorer.scoring", "ScoreOptions": "scorer.scoring", "ScoreSummary": "scorer.scoring",
    "read_results": "scorer.results.reader", "read_arrays": "scorer.results.reader",
    "compare_results": "scorer.results.compare",
    "predict": "scorer.predicting", "iter_predict": "scorer.predicting",
    "open_model": "scorer.predicting", "Predictions": "scorer.predictions",
}


def __getattr__(name: str):
    if name == "plots":
        return import_module("scorer.report.plots")
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scorer' has no attribute {name!r}")


__all__ = ["__version__", *_PUBLIC]
