"""Text pieces → the deltas a client joins into exactly the final text (realtime and server-sent events)."""

from __future__ import annotations


class Deltas:
    """The deltas of one utterance: no whitespace before its first text, and whitespace that ends a piece
    held back until text follows (dropped at the end), so that "".join(deltas) == final, the stripped
    text every other response gives (a piece is usually " word": this only moves a rare trailing space)."""

    def __init__(self):
        self._sent: list[str] = []
        self._held = ""

    def feed(self, piece: str) -> str:
        """The delta to send for this piece ("" when it holds only whitespace: send nothing)."""
        text = self._held + piece
        if not self._sent:
            text = text.lstrip()
        body = text.rstrip()
        self._held = text[len(body) :]
        if body:
            self._sent.append(body)
        return body

    @property
    def final(self) -> str:
        """The whole text: the deltas joined."""
        return "".join(self._sent)
