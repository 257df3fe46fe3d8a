"""Export every zoo model with default validation in this process and print one JSON line per
model: ``{"name", "report"}`` or ``{"name", "error"}``. Run by tests/export/test_zoo.py in a child
process with TensorFlow's oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``), which is read at import."""

from __future__ import annotations

import json
import sys

from exports import ZooCache
from zoo_models import ZOO

from export.errors import ValidationError


def main(names: list[str]) -> None:
    cache = ZooCache()
    for name in names or list(ZOO):
        try:
            line = {"name": name, "report": cache.get(name).result.report}
        except ValidationError as error:
            line = {"name": name, "error": str(error)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
