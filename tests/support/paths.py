"""Where the tests find the repository and its committed data."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
REGRESSION = DATA / "regression"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
