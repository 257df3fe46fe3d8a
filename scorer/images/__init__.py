"""Stage 1, images: which files, their bytes, their pixels, in batches.

``listing`` names the inputs (folder discovery, file lists, labels); ``files`` reads one file
safely and hashes it; ``decode`` (with ``jpeg`` for plain JPEGs and ``truncation`` for files that
end early) turns bytes into one preprocessed row; ``load`` does all three for one file;
``batches`` yields ordered batches decoded ahead in threads or in the worker processes of
``workers`` (rows in shared memory).

May import: :mod:`scorer.contract`, :mod:`scorer.errors`, :mod:`scorer.results.schema` (status
codes) and :mod:`scorer.rundir.child` (the environment of a child process). Knows nothing of
ONNX Runtime or metrics.
"""
