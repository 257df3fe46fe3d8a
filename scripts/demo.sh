#!/usr/bin/env bash
# Set up, then run the whole job on the built-in demo (scikit-learn's handwritten digits).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/demo.py "$@"
