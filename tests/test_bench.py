"""voxtral bench's request-pattern reports on the CPU (tiny model): files end to end through the CLI's
path, and the live capacity read from session ticks."""

import sys

import pytest

import voxtral
from voxtral.audio import load_audio
from voxtral.bench.files import files_lines, files_report
from voxtral.bench.streams import live_capacity, times


def test_files_run_end_to_end_and_are_written(tiny_dir, clip5, monkeypatch):
    monkeypatch.setitem(sys.modules, "soundfile", None)  # not a dependency: a plain install lacks it
    model = voxtral.load(tiny_dir, device="cpu")
    rows = files_report(model, load_audio(clip5), [1, 3])
    assert [r["files"] for r in rows] == [1, 3]
    for r in rows:
        assert r["written"] == r["files"] and r["failed"] == 0
        assert r["audio_s"] == pytest.approx(r["files"] * 5.0, rel=0.01)
        assert r["realtime_x"] == pytest.approx(r["audio_s"] / r["wall_s"])
        assert r["gpu_busy_pct"] is None  # the CPU: no GPU to sample
        if sys.platform == "linux":
            assert r["host_rss_growth_bytes"] >= 0
        stages = r["stage_s"]  # every stage ran, and the serial ones fit in the wall time
        assert set(stages) == {"audio", "mel", "encoder", "prefill", "decode"}
        assert all(v > 0 for v in stages.values()), stages
        assert stages["encoder"] + stages["prefill"] + stages["decode"] < r["wall_s"]
        line = r["timeline"]  # samples every 0.1 s from start to end: stages' seconds so far
        t, booked = line["t_s"], line["stage_s"]
        assert line["sample_s"] == 0.1 and t[0] < 0.05 and t == sorted(t) and len(t) >= 2
        assert r["wall_s"] - 0.05 < t[-1] < r["wall_s"] + 0.1 and line["gpu_busy_pct"] == [None] * len(t)
        assert set(booked) == set(stages) and all(len(v) == len(t) for v in booked.values())
        assert all(v == sorted(v) for v in booked.values()), booked
        assert {k: v[-1] for k, v in booked.items()} == pytest.approx(stages, abs=1e-3)
    assert files_lines(rows[:1])[-1].startswith("         stages (s):")  # no GPU: no busy line
    t = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.1, 1.2]  # NVML's None skipped; 0.5 s bins by time
    busy = {"t_s": t, "gpu_busy_pct": [10, 20, 30, 40, 50, 60, None, 5, 7]}
    gpu = {**rows[0], "timeline": {**rows[0]["timeline"], **busy}}
    assert files_lines([gpu])[-1] == "         GPU busy % per 0.5 s: 30 60 6"


def test_live_capacity_is_the_most_sessions_whose_p99_tick_keeps_up():
    ticks = ((1, 5), (8, 30), (32, 79.9), (64, 81))  # (sessions, p99 tick ms)
    rows = [{"sessions": s, "tick_p99_ms": ms, "chunk_ms": 80} for s, ms in ticks]
    assert live_capacity(rows) == 32
    assert live_capacity(rows[3:]) is None
    assert live_capacity([{**rows[0], "tick_p99_ms": 120}, rows[1]]) == 8  # not only a prefix


def test_real_time_factors_below_10_keep_two_digits():
    got = [times(x) for x in (0.163, 0.0042, 3.456, 31.4, 1366.2)]
    assert got == ["0.16x", "0.0042x", "3.5x", "31x", "1366x"]


def test_the_report_names_its_host():
    """The report says which CPU ran it and how fast it runs Python (host-bound figures depend on it)."""
    from voxtral.bench.host import host_info, host_line

    host = host_info()
    assert host["cpu"] and host["cores"] >= 1 and 1 < host["python_loop_ns"] < 10_000, host
    line = host_line(host)
    assert line.startswith(f"host: {host['cpu']}, {host['cores']} cores, Python loop ")
    assert line.endswith("ns/iteration (host-bound figures scale with it)")


def test_the_report_says_what_it_measured(tiny_dir, clip5):
    """The JSON names the model (or the random size), the delay, the voxtral version, the source commit
    where there is one, and when it ran (new-user pass: a tiny model's report could not be told from a
    full one's)."""
    import datetime
    from pathlib import Path

    from voxtral.bench.run import BenchOptions, run

    result = run(BenchOptions(model=tiny_dir, audio=Path(clip5), devices=("cpu",), cpu_steps=1, delay_ms=160))
    assert (result["model"], result["random_weights"], result["delay_ms"]) == (str(tiny_dir), None, 160)
    assert result["version"] == voxtral.__version__
    assert result["commit"] is None or len(result["commit"].removesuffix("+dirty")) == 40
    when = datetime.datetime.fromisoformat(result["date"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 600
