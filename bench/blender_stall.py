"""Blender main-thread stall during a generation through the add-on's threaded path (target: never > 50 ms).

    python bench/blender_stall.py [--model DIR] [--runs 3] [--steps 25] [--no-write]

In the UI the Generate operator hands the network work to a worker thread (jobs.py / worker.TaskRunner) and a
`bpy.app.timers` callback drains its queue on the main thread every 0.1 s: progress text, preview images and, at
the end, the finished image datablock. Background mode has no event loop, so timers never fire; this script plays
Blender's main loop instead: it calls the very `tick` functions the add-on registered with bpy.app.timers when
they are due, as Blender would, and times every call. The stall is the longest single main-thread call (the
operator itself, every tick); max / p99 / median over all calls of all runs are printed and written between the
`<!-- blender:start -->` and `<!-- blender:end -->` markers of BENCHMARKS.md (the rest of that file is left as
it is). The first run is cold: the worker thread starts the runtime and loads the model (auto start), as on the
first Generate of a session; the others reuse it. Same Blender set-up as tools/demo.py (temporary user folder,
this checkout's add-on, real runtime started by the add-on's launcher).
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import demo  # noqa: E402  (tools/demo.py: Blender set-up, model check)

START, END = "<!-- blender:start -->", "<!-- blender:end -->"
PROMPT = "a landscape with mountains under a sunset sky"
TARGET_MS = 50.0


def pump(bpy, jobs, calls: list[float], lateness: list[float], timeout: float) -> None:
    """Blender's main loop, for the add-on's timers: call each when due, time the call, honour its interval."""
    due: dict = {}
    deadline = time.perf_counter() + timeout
    while jobs._timers:
        if time.perf_counter() > deadline:
            raise demo.DemoError(f"the generation did not finish within {timeout:g} s")
        for tick in list(jobs._timers):
            now = time.perf_counter()
            due.setdefault(tick, now + jobs.TICK)  # bpy.app.timers.register(tick, first_interval=TICK)
            if now < due[tick]:
                continue
            lateness.append(now - due[tick])
            interval = tick()
            calls.append(time.perf_counter() - now)
            if interval is None:  # the timer is done (the tick removed itself from jobs._timers)
                if bpy.app.timers.is_registered(tick):
                    bpy.app.timers.unregister(tick)
                del due[tick]
            else:
                due[tick] = time.perf_counter() + interval
        pending = [when for tick, when in due.items() if tick in jobs._timers]
        time.sleep(max(0.0, min(pending, default=time.perf_counter()) - time.perf_counter()))


# A 1x1 PNG: loading it once before the runs pays Blender's one-time image I/O initialisation.
TINY_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


def warm_up_image_io(bpy, home: Path) -> float:
    """Seconds the session's first bpy.data.images.load takes (reported apart from the stall)."""
    path = home / "warm-up.png"
    path.write_bytes(TINY_PNG)
    started = time.perf_counter()
    image = bpy.data.images.load(str(path), check_existing=False)
    elapsed = time.perf_counter() - started
    bpy.data.images.remove(image)
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace, home: Path) -> dict:
    model = demo.check_model(args.model)
    bpy, addon = demo.start_blender(home)
    prefs = bpy.context.preferences.addons[demo.ADDON].preferences
    prefs.runtime_mode, prefs.python_path, prefs.model_dir = "LOCAL", sys.executable, model
    prefs.auto_start, prefs.timeout, prefs.output_dir = True, 120.0, str(home / "images")
    jobs = sys.modules[f"{addon.__name__}.imagen_addon.blender.jobs"]
    worker = sys.modules[f"{addon.__name__}.imagen_addon.blender.worker"]
    settings = bpy.context.scene.imagen
    settings.prompt, settings.panorama, settings.steps, settings.random_seed = PROMPT, True, args.steps, False
    jobs.FORCE_THREAD = True  # the UI path: worker thread + main-thread timer
    first_load = warm_up_image_io(bpy, home)
    calls: list[float] = []
    lateness: list[float] = []
    walls: list[float] = []
    operator_calls: list[float] = []
    try:
        for index in range(args.runs):
            settings.seed = index
            started = time.perf_counter()
            demo.call_operator(bpy.ops.imagen.generate)
            operator_calls.append(time.perf_counter() - started)
            pump(bpy, jobs, calls, lateness, args.timeout)
            walls.append(time.perf_counter() - started)
            if jobs.STATE.error:
                raise demo.DemoError(jobs.STATE.error)
            print(f"  run {index + 1}{' (cold: starts the runtime)' if index == 0 else ''}: {walls[-1]:.1f} s, "
                  f"{jobs.STATE.text}", flush=True)
    finally:
        worker.stop_all_launchers()
    every = calls + operator_calls
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"model": f"`{Path(model).name}` folder" if model else "bundled", "load": load, "runs": args.runs, "steps": args.steps, "walls": walls,
            "calls": len(every), "max": max(every), "p99": percentile(every, 0.99),
            "median": statistics.median(every), "operator_max": max(operator_calls),
            "late_max": max(lateness, default=0.0), "first_load": first_load}


def section(r: dict) -> str:
    ms = {k: f"{r[k] * 1000:.1f} ms" for k in ("max", "p99", "median", "operator_max", "late_max", "first_load")}
    verdict = "within" if r["max"] * 1000 <= TARGET_MS else "OVER"
    walls = ", ".join(f"{w:.1f} s" for w in r["walls"])
    return f"""{START}
## Blender main-thread stall

`python bench/blender_stall.py` on {time.strftime('%Y-%m-%d')}: bpy {r['bpy']}, {os.cpu_count()}-core
{platform.machine()} CPU (1-minute load average {r['load']:.1f} at the end), model: {r['model']}.
{r['runs']} generations of "{PROMPT}" (2:1 panorama, {r['steps']} steps) through the add-on's threaded path: a
worker thread does the HTTP, the add-on's `bpy.app.timers` tick drains its queue on the main thread. Background
Blender has no event loop, so the script calls that tick when it is due, as Blender's main loop would, and times
every main-thread call (the Generate operator and each tick, including previews and loading the finished image).
The first run is cold: the worker thread starts the runtime and loads the model.

| main-thread calls | max (the stall) | p99 | median | Generate operator | worst timer lateness |
|---|---|---|---|---|---|
| {r['calls']} | {ms['max']} | {ms['p99']} | {ms['median']} | {ms['operator_max']} | {ms['late_max']} |

Target: no call over {TARGET_MS:g} ms: **{verdict}**. Generation wall times: {walls}. Not counted above: the
session's first `bpy.data.images.load` ({ms['first_load']}), Blender's one-time image I/O initialisation, paid by
the first image any add-on or file loads; the script pays it before the runs with a 1x1 PNG.
{END}"""


def write_section(path: Path, text: str) -> None:
    """Replace what is between our markers (append the markers at the end when missing); nothing else changes."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if START in old and END in old and old.index(START) < old.index(END):
        new = old[:old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="", help="model folder (default: the bundled model)")
    p.add_argument("--runs", type=int, default=3, help="generations (the first starts the runtime; default 3)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per generation (default 900)")
    p.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md", help="file to update")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    home = Path(tempfile.mkdtemp(prefix="imagen-stall-"))
    try:
        print(f"Blender main-thread stall: {args.runs} generation(s), {args.steps} steps", flush=True)
        result = run(args, home)
        import bpy

        result["bpy"] = bpy.app.version_string
    except demo.DemoError as err:
        print(f"blender_stall: error: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"stall over {result['calls']} main-thread calls: max {result['max'] * 1000:.1f} ms, "
          f"p99 {result['p99'] * 1000:.1f} ms, median {result['median'] * 1000:.2f} ms "
          f"(target: never > {TARGET_MS:g} ms); first image load of the session, apart: "
          f"{result['first_load'] * 1000:.1f} ms")
    if not args.no_write:
        write_section(args.benchmarks, section(result))
        print(f"wrote the blender section of {args.benchmarks}")
    return 0 if result["max"] * 1000 <= TARGET_MS else 2


if __name__ == "__main__":
    sys.exit(main())
