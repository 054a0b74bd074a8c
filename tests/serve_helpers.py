"""A `voxtral serve` process on 127.0.0.1 for tests, and a realtime client written as vLLM's example is."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m voxtral serve` in a subprocess, waited for until /health answers."""

    def __init__(self, model_dir, *args: str, key: str | None = KEY):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "voxtral", "serve", "--model", str(model_dir), "--device", "cpu"]
        cmd += ["--port", str(self.port), *args] + (["--api-key", key] if key else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voxtral serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if self.get("/health", key)[0] == 200:
                    return
            except OSError:  # not listening yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("voxtral serve did not answer /health within 120 s")

    def get(self, path: str, key: str | None = KEY) -> tuple[int, str]:
        req = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {key}"} if key else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1) → PCM16 bytes, as vLLM's example client converts (× 32767)."""
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """What the server makes of those bytes (÷ 32768): the samples an offline run must be given."""
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


async def realtime(url: str, pcm: bytes, chunk_bytes: int, key: str | None = KEY, extra: dict | None = None):
    """vLLM's example client: session.update, commit, appends, final commit; (deltas, done event)."""
    import websockets

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with websockets.connect(
        url.replace("http", "ws") + "/v1/realtime", additional_headers=headers
    ) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created", created
        await ws.send(json.dumps({"type": "session.update", "model": "voxtral", **(extra or {})}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        for i in range(0, len(pcm), chunk_bytes):
            chunk = pcm[i : i + chunk_bytes]
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
            )
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        deltas = []
        async for message in ws:
            data = json.loads(message)
            if data["type"] == "transcription.delta":
                deltas.append(data)
            elif data["type"] == "transcription.done":
                return deltas, data
            else:
                raise AssertionError(f"unexpected event {data}")
    raise AssertionError("closed before transcription.done")


def run(coro):
    return asyncio.run(coro)


def env_without(*names: str) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}
