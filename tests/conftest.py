"""Shared fixtures: the session's caches of exported models (:mod:`exports`).

The suite runs on the CPU: ``MCD_SCORE_DEVICE=cpu`` makes every ``--device auto`` (the default) a
CPU run, in this process and in the commands it starts, so that the bit-identity tests hold on a
GPU machine too. The tests of ``auto`` itself unset it; the CUDA suite (``tests/cuda``) asks for
``cuda`` by name.
"""

from __future__ import annotations

import os

import pytest
from exports import ExportCache, ZooCache

os.environ.setdefault("MCD_SCORE_DEVICE", "cpu")


@pytest.fixture(scope="session")
def exports() -> ExportCache:
    """Session-wide cache of exported models: ``exports.get("mnist_cnn")``."""
    return ExportCache()


@pytest.fixture(scope="session")
def zoo() -> ZooCache:
    """Session-wide cache of the exported zoo models: ``zoo.get("resnet50")``."""
    return ZooCache()


def pytest_collection_modifyitems(items) -> None:
    """Under pytest-xdist (``-n 2 --dist loadgroup``) the tests of the exported zoo models run in
    one worker, so that each zoo model is exported once, not once per worker."""
    for item in items:
        if "zoo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("zoo"))
