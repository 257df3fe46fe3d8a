"""Scale-out on Ray: the same library call a local run makes, one shard of images per call.

The driver (:mod:`scorer.distributed.driver`) cuts the input list into shards; Ray actors
(:mod:`scorer.distributed.worker`) each hold one ONNX Runtime session for their lifetime and run
:func:`scorer.scoring.score` on a shard, writing one part file; the driver stitches the parts into
``OUT`` (virtual datasets) or consolidates them into one plain file. Nothing here is imported by a
local run, and Ray is imported only when a distributed run starts.
"""
