"""How fast the explorer draws its first frame, next to a minimal Textual app.

Each sample is a fresh interpreter (imports included, nothing warm but the OS file cache): the
parent notes the wall-clock time, spawns ``python -c CHILD <which>``, and the child prints the
wall-clock time at which its first frame was painted; the difference is the sample. "First
frame" is the first ``call_after_refresh`` callback after the app is ready, in headless mode.
The two apps are measured alternately, N times each, so that a busy machine slows both alike:

    python benchmarks/bench_startup.py            # 5 of each
    python benchmarks/bench_startup.py -n 9

(a) ``LayerscopeApp`` over a temporary empty cache (LAYERSCOPE_DB, LAYERSCOPE_STATE and
HF_HUB_CACHE in a temp dir, default poll interval); (b) a Textual app with a Header, a Static
and a Footer. Prints each median and their ratio (goal: at most 1.5), and for layerscope also
the time to the first frame with the Setup tab filled (pickers and form), which is what a user
starts working with: the explorer paints its frame first and fills the tabs right after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKER = "FIRST-FRAME"
FILLED = "SETUP-FILLED"

CHILD = f"""
import sys, time, asyncio

which = sys.argv[1]
if which == "layerscope":
    from layerscope.app.tui.app import LayerscopeApp

    app = LayerscopeApp()
else:
    from textual.app import App
    from textual.widgets import Footer, Header, Static

    class Minimal(App):
        def compose(self):
            yield Header()
            yield Static("hello")
            yield Footer()

    app = Minimal()


async def painted(app):
    done = asyncio.Event()
    app.call_after_refresh(done.set)
    await done.wait()


async def first_frame(pilot):
    await painted(pilot.app)
    print("{MARKER}", repr(time.time()), flush=True)
    if which == "layerscope":
        # The Setup tab as a user works with it: pickers and form mounted and painted.
        while getattr(pilot.app, "browse", None) is None:
            await asyncio.sleep(0.001)
        await painted(pilot.app)
        print("{FILLED}", repr(time.time()), flush=True)
    pilot.app.exit()


app.run(headless=True, size=(100, 32), auto_pilot=first_frame)
"""


def sample(which: str, env: dict[str, str]) -> tuple[float, float | None]:
    """Seconds from spawning a fresh interpreter to its first painted frame, and (layerscope)
    to the first frame with the Setup tab filled."""
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, which],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    stamps = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in (MARKER, FILLED):
            stamps[parts[0]] = float(parts[1]) - started
    if MARKER not in stamps or result.returncode != 0:
        raise RuntimeError(
            f"{which}: no first frame\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return stamps[MARKER], stamps.get(FILLED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="samples of each app (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="layerscope-startup-") as folder:
        env = dict(os.environ)
        env["LAYERSCOPE_DB"] = str(Path(folder) / "results.duckdb")
        env["LAYERSCOPE_STATE"] = str(Path(folder) / "state.json")
        env["HF_HUB_CACHE"] = str(Path(folder) / "hf")
        env.pop("NO_COLOR", None)
        times: dict[str, list[float]] = {"layerscope": [], "minimal": []}
        filled: list[float] = []
        sample("minimal", env)  # warm the OS file cache for both, not measured
        sample("layerscope", env)
        for _ in range(args.n):
            for which in times:
                first, setup = sample(which, env)
                times[which].append(first)
                if setup is not None:
                    filled.append(setup)
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    medians = {which: statistics.median(values) for which, values in times.items()}
    for which, values in times.items():
        shown = " ".join(f"{value:.2f}" for value in values)
        print(f"{which:<11} median {medians[which]:.2f} s   ({shown})")
    print(f"ratio layerscope / minimal: {medians['layerscope'] / medians['minimal']:.2f}")
    setup_median = statistics.median(filled)
    shown = " ".join(f"{value:.2f}" for value in filled)
    print(f"layerscope, Setup tab filled: median {setup_median:.2f} s   ({shown})")
    print(f"ratio Setup filled / minimal first frame: {setup_median / medians['minimal']:.2f}")


if __name__ == "__main__":
    main()
