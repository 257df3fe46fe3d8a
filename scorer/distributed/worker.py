"""What one Ray actor does: hold a session, score shards into part files (no Ray import here)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

from scorer.errors import ScorerUsageError
from scorer.images.listing import ImageRef
from scorer.model.session import open_session
from scorer.scoring import ScoreOptions, score


class UnreadableShard(ScorerUsageError):
    """A worker cannot see the files of its shard: the images are not on a shared file system."""


class ShardWorker:
    """Scores shards with one ONNX Runtime session kept for the worker's lifetime.

    Args:
        model: The ``.onnx`` file (a path every node can read).
        options: The run's options; ``mode`` is forced to ``resume`` per shard, so a shard that a
            killed worker had started continues from its committed rows.
        threads: ONNX Runtime threads (the CPUs the worker was given).
    """

    def __init__(self, model: str, options: ScoreOptions, threads: int) -> None:
        self.options = dataclasses.replace(options, mode="resume", threads=threads,
                                           merge_in_child=False, decode_processes=False)
        self.session = open_session(Path(model), options.device, threads, tf32=options.tf32,
                                    max_memory_mb=options.max_memory_mb)

    def ping(self) -> str:
        """An answer once the actor is up (its session open): the host it runs on."""
        return socket.gethostname()

    def score_shard(self, refs: list[ImageRef], part: str, has_labels: bool) -> str:
        """Score ``refs`` into the part file ``part`` (a no-op if it is already complete); the
        provider the worker runs on.

        Raises:
            UnreadableShard: The first file of the shard is not there on this node.
        """
        path = Path(part)
        if path.exists():  # done by an earlier attempt that died before it could report
            return self.session.provider
        folder = refs[0].source.parent  # a missing file is a failed row; a missing folder is
        if not folder.is_dir():        # a node without the images
            raise UnreadableShard(
                f"the worker on {socket.gethostname()} cannot see {folder}, the folder of "
                f"{refs[0].path}, the first image of its shard: every node must read the images "
                "at the same path (a shared file system or an object store mount)")
        score(refs, path, self.session, self.options, has_labels=has_labels)
        return self.session.provider
