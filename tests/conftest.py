"""Shared fixtures: tiny random checkpoints (built once per session) and the speech clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxtral.testing import write_checkpoint

AUDIO = Path(__file__).parents[1] / "audio" / "night1968"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Tiny checkpoint, EOS unreachable: every run decodes every position."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=0, eos_reachable=False)


@pytest.fixture(scope="session")
def tiny_eos_dir(tmp_path_factory) -> Path:
    """Tiny checkpoint with a reachable EOS."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny_eos"), "tiny", seed=1, eos_reachable=True)


@pytest.fixture(scope="session")
def clip5() -> Path:
    return AUDIO / "5s_dont_worry_about_him.wav"


@pytest.fixture(scope="session")
def audio5(clip5):
    """The 5 s clip's samples (float32, 16 kHz); tests only read it."""
    from voxtral.audio import load_audio

    return load_audio(clip5)


@pytest.fixture(scope="session")
def clip15() -> Path:
    return AUDIO / "15s_there_are_two_of_them_out_there.wav"
