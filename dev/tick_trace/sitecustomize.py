"""Tick trace for load tests (not part of the package): with this directory first on PYTHONPATH and
VOXTRAL_TICK_TRACE=PREFIX set, every Python process that runs the engine writes PREFIX.PID.json at exit
(and every 10 s): each tick that did work as [start s, seconds, live jobs, offline jobs, positions ready,
{phase: ms}] (phases: the Scheduler's _admit, _encode, _prefill, _step, …), every garbage collection as
[start s, seconds, generation, collected], and for `voxtral serve` each delivered piece as [s, latency s].
Times are time.perf_counter(), comparable across processes of one machine. Used to find what made the
serve load test's latency tail (issue #17):

    PYTHONPATH=dev/tick_trace VOXTRAL_TICK_TRACE=/tmp/trace python dev/serve_load.py --model DIR ...

It patches methods at import time and adds a little per-tick work: compare runs with it on, not a run with
it against one without.
"""

import builtins
import gc
import json
import os
import sys
import time

_PREFIX = os.environ.get("VOXTRAL_TICK_TRACE")


def _install() -> None:
    rec: dict = {"ticks": [], "gc": [], "pieces": []}
    path = f"{_PREFIX}.{os.getpid()}.json"
    last = [time.perf_counter()]

    def dump() -> None:
        if rec["ticks"] or rec["pieces"]:
            with open(path, "w") as f:
                json.dump(rec, f)

    import atexit

    atexit.register(dump)
    started = [0.0]

    def on_gc(phase, info) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            rec["gc"].append(
                (started[0], time.perf_counter() - started[0], info["generation"], info["collected"])
            )

    gc.callbacks.append(on_gc)

    def patch_scheduler(S) -> None:
        phases: dict = {}

        def timed(name):
            orig = getattr(S.Scheduler, name)

            def run(self, *a, **k):
                t = time.perf_counter()
                try:
                    return orig(self, *a, **k)
                finally:
                    phases[name] = phases.get(name, 0.0) + time.perf_counter() - t

            setattr(S.Scheduler, name, run)

        for name in ("_expire", "_admit", "_encode", "_prefill", "_step", "_retire"):
            timed(name)
        orig_tick = S.Scheduler.tick

        def tick(self):
            phases.clear()
            t = time.perf_counter()
            live = sum(1 for j in self.active if j.live)
            ready = sum(j.ready() for j in self.active)
            worked = orig_tick(self)
            end = time.perf_counter()
            if worked:
                ms = {k: round(v * 1e3, 2) for k, v in phases.items()}
                rec["ticks"].append((t, end - t, live, len(self.active) - live, ready, ms))
            if end - last[0] > 10:
                last[0] = end
                dump()
            return worked

        S.Scheduler.tick = tick

    def patch_pump(P) -> None:
        orig = P.Pump._pass

        def deliver(self, s, pieces):
            now = time.perf_counter()
            rec["pieces"].extend((now, p.latency) for p in pieces)
            return orig(self, s, pieces)

        P.Pump._pass = deliver

    real_import = builtins.__import__
    done = {"voxtral.scheduler": False, "voxtral.serve.pump": False}

    def hook(name, *a, **k):  # patch each module once it has its class, then step aside
        module = real_import(name, *a, **k)
        for mod, patch, cls in (
            ("voxtral.scheduler", patch_scheduler, "Scheduler"),
            ("voxtral.serve.pump", patch_pump, "Pump"),
        ):
            if not done[mod] and hasattr(sys.modules.get(mod), cls):
                done[mod] = True
                patch(sys.modules[mod])
        if all(done.values()):
            builtins.__import__ = real_import
        return module

    builtins.__import__ = hook


if _PREFIX:
    _install()
