"""Run an experiment notebook at given parameters: jupytext source -> papermill -> executed notebook,
``metrics.json`` and figures in one output folder. Re-running into the same folder resumes from the
notebook's checkpoints."""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

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
          launcher=None, log=print) -> list[dict[str, Any]]:
    """Run every point of ``grid`` as one job (``experiments.sweep.Launcher``: local processes, one per GPU
    or CPU slot, or Slurm jobs); see :mod:`reasoning_lab.experiments.sweep`."""
    from .sweep import run_sweep

    return run_sweep(name, grid, preset, overrides, out, launcher, log)
