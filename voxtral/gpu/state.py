"""A decoder stream's host-side state on the GPU: its position, and audio embeddings not yet in its ring."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .decoder import AUDIO_RING


@dataclass
class GpuState:
    n_positions: int | None  # positions the audio allows; None: an unbounded stream
    chunks: deque = field(default_factory=deque)  # (first position, [k, D] f32 device embeddings) not fed
    available: int = 0  # positions with an audio embedding so far
    pos: int = 0  # next position (host mirror of the device counter)
    fed: int = 0  # audio positions copied into the ring so far
    token: int = 0  # input token of the next step (kept by the batched engine, which lays rows out)

    def append(self, embeds) -> None:
        if len(embeds):
            self.chunks.append((self.available, embeds))
            self.available += len(embeds)

    def feed(self, ring, upto: int) -> None:
        """Copy the embeddings of positions [fed, upto) into ring [Ra, D], slot p % Ra (stream-ordered)."""
        upto = min(upto, self.available)
        assert upto - self.pos <= AUDIO_RING, "audio fed further ahead than the ring holds"
        while self.fed < upto:
            first, chunk = self.chunks[0]
            slot, i = self.fed % AUDIO_RING, self.fed - first
            n = min(upto - self.fed, AUDIO_RING - slot, len(chunk) - i)
            ring[slot : slot + n] = chunk[i : i + n]
            self.fed += n
            if self.fed == first + len(chunk):
                self.chunks.popleft()  # copied: the ring holds it now
