"""The pass plan and the pass loop: on CUDA every call has the same shape (checked on the CPU by
a session that believes it is on CUDA)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scorer_support import exported_model

from scorer.model import session as session_module
from scorer.model.passes import DEFAULT_BATCH, Plan, plan, run_passes
from scorer.model.session import CPU, CUDA, BoundRunner, open_session


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return exported_model(tmp_path_factory)


def metadata(per_image: int, per_pass: int, model_path):
    meta = open_session(model_path, "cpu").metadata
    return dataclasses.replace(meta, bytes_per_image=per_image, bytes_per_image_pass=per_pass)


@pytest.mark.parametrize("passes", [50, 64, 97, 120])
def test_on_cuda_the_chunk_divides_t_and_fits_the_cuda_batch(model, passes):
    meta = metadata(100_000, 200_000, model)
    chosen = plan(meta, passes, 2048, None, CUDA)
    assert passes % chosen.pass_chunk == 0
    assert len({count for _, count in chosen.chunks(passes)}) == 1  # one call shape
    assert chosen.batch_size == DEFAULT_BATCH[CUDA]
    per_call = chosen.batch_size * (meta.bytes_per_image + chosen.pass_chunk * meta.bytes_per_image_pass)
    assert per_call <= 2048 * 2**20
    # the CPU keeps its plan (results recorded with it stay reproducible)
    cpu = plan(meta, passes, 2048, None, CPU)
    assert cpu.pass_chunk == min(passes, int((2048 * 2**20 / 32 - 100_000) // 200_000))


def test_a_prime_t_on_cuda_runs_one_pass_a_call_only_when_it_must(model):
    meta = metadata(1000, 1000, model)
    assert plan(meta, 97, 2048, None, CUDA).pass_chunk == 97  # fits whole
    tight = plan(metadata(100_000, 2_000_000, model), 97, 2048, None, CUDA)
    assert tight.pass_chunk == 1  # 97 is prime: the only divisors are 1 and 97


def test_short_batches_are_padded_to_one_shape_on_cuda(model, monkeypatch):
    session = open_session(model, "cpu")
    images = np.random.default_rng(1).random((5, 16, 16, 1), dtype=np.float32)
    run_plan = Plan(batch_size=8, pass_chunk=4)
    plain_stats, plain_passes = run_passes(session, images, 12, 3, True, run_plan)
    shapes = []

    class Recording(BoundRunner):
        def __init__(self, scoring, images, device):
            shapes.append(images.shape)
            super().__init__(scoring, images, "cpu")

    monkeypatch.setattr(session_module, "BoundRunner", Recording)
    session.provider = CUDA
    stats, passes = run_passes(session, images, 12, 3, True, run_plan)
    assert shapes == [(8, 16, 16, 1)]  # padded once, for all three chunks
    np.testing.assert_array_equal(passes, plain_passes)
    np.testing.assert_array_equal(stats.total, plain_stats.total)
    np.testing.assert_array_equal(stats.m2, plain_stats.m2)
    assert passes.shape == (5, 12, 10)


def test_on_cuda_the_budget_is_at_most_most_of_the_free_gpu_memory(model, monkeypatch):
    from scorer.model import passes as passes_module
    from scorer.model.passes import memory_budget

    session = open_session(model, "cpu")
    monkeypatch.setattr(passes_module.cuda_libraries, "free_memory_mb", lambda: 1000)
    assert memory_budget(session, 2048) == 2048  # the CPU: --max-memory only
    session.provider = CUDA
    assert memory_budget(session, 2048) == 800 and memory_budget(session, 512) == 512
    monkeypatch.setattr(passes_module.cuda_libraries, "free_memory_mb", lambda: None)
    assert memory_budget(session, 2048) == 2048  # unknown: --max-memory
