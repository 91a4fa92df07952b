"""Run an experiment notebook at given parameters: jupytext source -> papermill -> executed notebook,
``metrics.json`` and figures in one output folder. Re-running into the same folder resumes from the
notebook's checkpoints."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..io import write_csv
from . import registry as experiments

RUNS = Path("runs")


class RunFailed(RuntimeError):
    pass


def default_out(name: str) -> Path:
    return RUNS / name / time.strftime("%Y%m%d-%H%M%S")


def execute(name: str, preset: str = "default", overrides: dict[str, Any] | None = None,
            out: str | os.PathLike | None = None, quiet: bool = True) -> dict[str, Any]:
    """Validate, then execute the notebook into ``out``; return its metrics."""
    exp = experiments.get(name)
    params = exp.resolve(preset, overrides)          # every parameter checked before any work
    out = Path(out) if out else default_out(name)
    out.mkdir(parents=True, exist_ok=True)
    params["output_dir"] = str(out.resolve())

    import jupytext
    import papermill as pm

    nb = jupytext.read(exp.notebook)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    if quiet:
        os.environ["REASONING_LAB_QUIET"] = "1"
    executed = out / f"{name}.ipynb"
    try:
        pm.execute_notebook(nb, str(executed), parameters=_jsonable(params), kernel_name="python3",
                            cwd=str(exp.notebook.parent), progress_bar=False, log_output=False,
                            report_mode=False)
    except pm.PapermillExecutionError as err:
        raise RunFailed(f"{name} failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                        f"(executed notebook: {executed})") from None
    metrics_file = out / "metrics.json"
    if not metrics_file.exists():
        raise RunFailed(f"{name} finished without writing {metrics_file}")
    return json.loads(metrics_file.read_text())


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def split_values(text: str) -> list[str]:
    """Split ``a,b,[c,d]`` on top-level commas."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_label(point: dict[str, Any]) -> str:
    safe = lambda v: str(v).replace("/", "_").replace(" ", "").replace("[", "").replace("]", "")
    return "_".join(f"{k}={safe(v)}" for k, v in point.items()) or "base"


def sweep(name: str, grid: dict[str, list[str]], preset: str = "default",
          overrides: dict[str, Any] | None = None, out: str | os.PathLike | None = None,
          devices: list[str] | None = None, log=print) -> list[dict[str, Any]]:
    """Run every point of ``grid``; with ``devices`` the runs are spread over GPUs, one process per run."""
    exp = experiments.get(name)
    points = grid_points(grid)
    for point in points:                                  # validate the whole grid first
        exp.resolve(preset, {**(overrides or {}), **point})
    out = Path(out) if out else RUNS / name / ("sweep-" + time.strftime("%Y%m%d-%H%M%S"))
    rows: list[dict[str, Any]] = []

    def finish(point, metrics):
        rows.append({**point, **metrics})
        log(f"  {point_label(point)}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in metrics.items()))
        write_csv(out / "sweep.csv", rows)

    if not devices:
        for point in points:
            finish(point, execute(name, preset, {**(overrides or {}), **point}, out / point_label(point)))
        return rows

    pending = list(points)
    running: dict[str, tuple[subprocess.Popen, dict]] = {}
    while pending or running:
        for dev in devices:
            if dev not in running and pending:
                point = pending.pop(0)
                cmd = [sys.executable, "-m", "reasoning_lab.experiments.cli", "run", name, "--preset", preset,
                       "--out", str(out / point_label(point)), "-p", "device=cuda"]
                for k, v in {**(overrides or {}), **point}.items():
                    cmd += ["-p", f"{k}={v}"]
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": dev, "REASONING_LAB_QUIET": "1"}
                running[dev] = (subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL), point)
        time.sleep(0.5)
        for dev, (proc, point) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[dev]
            if proc.returncode:
                raise RunFailed(f"sweep point {point_label(point)} failed on device {dev} "
                                f"(exit {proc.returncode}); see {out / point_label(point)}")
            finish(point, json.loads((out / point_label(point) / "metrics.json").read_text()))
    return rows
