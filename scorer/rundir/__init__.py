"""Stage 4, run directory: a run in progress, crash-safe, until its results file is complete.

``folder`` is the locked ``OUT.parts/`` folder of one run (modes new, overwrite, resume; the final
atomic rename); ``segments`` commits rows as append-only files; ``merge`` writes the finished
results file in a child process started by ``child``; ``legacy`` imports an interrupted
schema-1 run.

May import: :mod:`scorer.results` (the file it writes), :mod:`scorer.atomic`, :mod:`scorer.errors`.
Knows nothing of images, ONNX Runtime or metrics.
"""
