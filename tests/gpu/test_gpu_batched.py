"""Batched decoding on the GPU: every stream of a batch gives exactly the tokens it gives alone, through
the graphs of several buckets (fused GEMVs up to 8 rows, cuBLAS GEMMs beyond), with streams joining and
leaving mid-batch, early stops, and live sessions on a StreamServer."""

import pytest
from batch_checks import (
    check_bad_input_among_good,
    check_batch_equals_alone,
    check_server_sessions_join_and_leave,
    mixed_inputs,
    stopping_schedule,
)

import voxtral
from voxtral.gpu.engine import buckets


@pytest.fixture(scope="module")
def gpu(tiny_dir):
    return voxtral.load(tiny_dir, device="cuda")


def test_buckets():
    assert buckets(1) == (1,)
    assert buckets(12) == (1, 2, 4, 8, 12)
    assert buckets(64) == (1, 2, 4, 8, 16, 32, 64)


def test_batch_equals_alone_fused_gemv_buckets(gpu, clip5, clip15):
    check_batch_equals_alone(gpu, mixed_inputs(clip5, clip15, 7), batch_size=3)


def test_batch_equals_alone_gemm_buckets(gpu, clip5, clip15):
    """12 slots: the step of 9 … 12 rows runs cuBLAS GEMMs, fewer rows the fused GEMVs."""
    check_batch_equals_alone(gpu, mixed_inputs(clip5, clip15, 16), batch_size=12)


def test_batch_with_early_stops_equals_alone(tiny_dir, clip5, clip15):
    model = voxtral.load(tiny_dir, device="cuda")
    inputs = mixed_inputs(clip5, clip15, 6)
    model.schedule = stopping_schedule(model, inputs)
    check_batch_equals_alone(model, inputs, batch_size=3)


def test_bad_input_among_good(gpu, clip5, tmp_path):
    check_bad_input_among_good(gpu, clip5, tmp_path)


def test_server_sessions_join_and_leave(gpu, clip5, clip15):
    check_server_sessions_join_and_leave(gpu, clip5, clip15, capacity=3)


def test_engine_graphs_and_memory(gpu, clip5):
    engine = gpu.backend.engine(12, max_positions=200)
    embeds = gpu.backend.encode(gpu.trace(clip5, 1).mel)
    slots = [engine.join(embeds) for _ in range(10)]
    for s in slots:
        engine.prefill(s, gpu.schedule.prompt)
    for k in (1, 3, 10):
        engine.step(slots[:k], 2)
    assert sorted(engine._graphs) == [1, 4, 12]
    assert engine.kv_bytes_per_stream() * 12 < engine.nbytes()
