"""Live audio from the default input device (the `mic` extra: sounddevice, PortAudio).

microphone(rate)    mono float32 blocks [S] at rate, 100 ms each, until interrupted
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import numpy as np

from .errors import DeviceError, OptionError

MIC_BLOCK_S = 0.1  # microphone block: 100 ms


def microphone(rate: int = 16000) -> Iterator[np.ndarray]:
    """Mono float32 blocks [S] at rate from the default input device, until interrupted.

    OptionError at once when the `mic` extra (sounddevice) is missing (exit 2, as `serve` without its
    extra); DeviceError when its PortAudio library or the input device is.
    """
    try:
        import sounddevice
    except ImportError:
        raise OptionError("microphone input needs the `mic` extra: pip install 'voxtral[mic]'") from None
    except OSError as e:  # the extra is there but its C library is not
        raise DeviceError(
            f"the microphone needs the PortAudio library ({e}); install it (e.g. apt install libportaudio2)"
        ) from None
    return _microphone_blocks(sounddevice, rate)


def _microphone_blocks(sounddevice, rate: int) -> Iterator[np.ndarray]:
    blocks: queue.Queue = queue.Queue()
    callback = lambda data, frames, when, status: blocks.put(data[:, 0].copy())  # noqa: E731
    try:
        device = sounddevice.InputStream(
            samplerate=rate, channels=1, dtype="float32", blocksize=int(rate * MIC_BLOCK_S), callback=callback
        )
    except sounddevice.PortAudioError as e:
        raise DeviceError(f"cannot open the microphone ({e}); check the input device") from None
    with device:
        while True:
            yield blocks.get()
