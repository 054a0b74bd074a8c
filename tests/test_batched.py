"""Batched decoding on the CPU: continuous batching of files and a server of live sessions, each stream
giving exactly the tokens it gives alone (tiny random checkpoints)."""

import pytest
from batch_checks import (
    check_bad_input_among_good,
    check_batch_equals_alone,
    check_server_sessions_join_and_leave,
    mixed_inputs,
    stopping_schedule,
)

import voxtral
from voxtral.errors import OptionError
from voxtral.server import StreamServer


@pytest.fixture(scope="module")
def cpu(tiny_dir):
    return voxtral.load(tiny_dir, device="cpu")


def test_batch_equals_alone(cpu, clip5, clip15):
    check_batch_equals_alone(cpu, mixed_inputs(clip5, clip15, 7), batch_size=3)


def test_batch_with_early_stops_equals_alone(tiny_dir, clip5, clip15):
    """Streams that stop at EOS mid-burst leave early: EOS is taken to be a common text token here."""
    model = voxtral.load(tiny_dir, device="cpu")
    inputs = mixed_inputs(clip5, clip15, 6)
    model.schedule = stopping_schedule(model, inputs)
    check_batch_equals_alone(model, inputs, batch_size=3)


def test_bad_input_among_good(cpu, clip5, tmp_path):
    check_bad_input_among_good(cpu, clip5, tmp_path)


def test_server_sessions_join_and_leave(cpu, clip5, clip15):
    check_server_sessions_join_and_leave(cpu, clip5, clip15, capacity=3)


def test_server_full_and_bad_batch_size(cpu, clip5):
    server = StreamServer(cpu, capacity=1)
    server.open()
    with pytest.raises(OptionError, match="full"):
        server.open()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(OptionError, match="batch_size"):
            cpu.transcribe_batch([clip5], batch_size=bad)
