"""Run an experiment notebook at given parameters: jupytext source -> papermill -> executed notebook,
``metrics.json`` and figures in one output folder. Re-running into the same folder resumes from the
notebook's checkpoints."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import registry as experiments

RUNS = Path("runs")


# How long the client waits for a cell's last output after the kernel says the cell is done. nbclient's
# default (4 s) ends long runs on a busy machine at a cell that renders a large figure or player.
IOPUB_TIMEOUT_S = 120


def skip_iri_checker() -> None:
    """Keep jsonschema's optional IRI format checker (the ``rfc3987_syntax`` package, which builds an
    Earley parser when imported: about two seconds) out of this process. nbformat imports jsonschema
    and the checker with it, although no notebook schema has an IRI field. Called at the start of
    the processes this package runs itself (the command line, a sweep's jobs); a no-op where jsonschema
    is already loaded."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)     # its import fails; jsonschema goes without


class RunFailed(RuntimeError):
    pass


def default_out(name: str) -> Path:
    return RUNS / name / time.strftime("%Y%m%d-%H%M%S")


def execute(name: str, preset: str = "default", overrides: dict[str, Any] | None = None,
            out: str | os.PathLike | None = None, quiet: bool = True, stream: bool = False) -> dict[str, Any]:
    """Validate, then execute the notebook into ``out``; return its metrics.

    Every parameter is checked before anything is written (the device included: asking for ``cuda`` where
    there is none is a ``ValueError``). With ``stream`` the notebook's output, a line per cell and the
    training progress bars (as text) go to this process's terminal while the notebook runs."""
    exp = experiments.get(name)
    if not exp.notebook.exists():
        raise RunFailed(f"{name}: notebook {exp.notebook} is missing")
    params = exp.resolve(preset, overrides)          # every parameter checked before any work
    check_device(params.get("device", "auto"))
    out = Path(out) if out else default_out(name)
    out.mkdir(parents=True, exist_ok=True)
    params["output_dir"] = str(out.resolve())

    import jupytext
    import papermill as pm

    nb = jupytext.read(exp.notebook)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    executed = out / f"{name}.ipynb"
    # the kernel inherits this environment: quiet runs draw no bars, streamed ones draw text bars
    env = {"REASONING_LAB_QUIET": "1" if quiet else "0", "REASONING_LAB_PROGRESS": "text" if stream else ""}
    stream_kw = {"stdout_file": sys.stdout, "stderr_file": sys.stderr} if stream else {}
    try:
        with _environ(env), _cell_log(len(nb.cells) + 1) if stream else contextlib.nullcontext():
            pm.execute_notebook(nb, str(executed), parameters=_jsonable(params), kernel_name="python3",
                                cwd=str(exp.notebook.parent), progress_bar=False, log_output=stream,
                                report_mode=False, kernel_manager_class=ipc_kernel_manager(),
                                iopub_timeout=IOPUB_TIMEOUT_S, **stream_kw)
    except pm.PapermillExecutionError as err:
        raise RunFailed(f"{name} failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                        f"(executed notebook: {executed})") from None
    metrics_file = out / "metrics.json"
    if not metrics_file.exists():
        raise RunFailed(f"{name} finished without writing {metrics_file}")
    return json.loads(metrics_file.read_text())


def check_device(name: str) -> None:
    """An explicitly requested accelerator must exist here (``ValueError`` naming ``device`` otherwise);
    ``auto`` and ``cpu`` always run, without importing torch."""
    if name not in ("auto", "cpu"):
        from ..devices import resolve_device

        resolve_device(name)


def ipc_kernel_manager():
    """A kernel manager class whose kernel talks over local IPC sockets (in a private temporary folder)
    instead of TCP on localhost: no port is opened, and the kernel has no unencrypted TCP to warn about."""
    import shutil
    import tempfile

    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kw):
            if os.name == "posix":
                self._ipc_dir = tempfile.mkdtemp(prefix="reasoning-lab-kernel-")
                kw.setdefault("transport", "ipc")
                kw.setdefault("ip", os.path.join(self._ipc_dir, "kernel"))
                kw.setdefault("cache_ports", False)
            super().__init__(**kw)

        def cleanup_resources(self, restart: bool = False) -> None:
            super().cleanup_resources(restart=restart)
            if not restart and getattr(self, "_ipc_dir", None):
                shutil.rmtree(self._ipc_dir, ignore_errors=True)

    return IPCKernelManager


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _cell_log(n_cells: int):
    """While streaming: papermill's "Executing Cell N" records become one short line per cell on stderr
    (``n_cells`` counts the parameters cell papermill injects); its copies of the cells' output are
    dropped (that output is streamed as it is, bars included)."""
    import logging

    log = logging.getLogger("papermill")

    class CellLines(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("Executing Cell"):
                number = msg[len("Executing Cell"):].strip(" -")
                sys.stderr.write(f"[cell {number}/{n_cells}]\n")
                sys.stderr.flush()

    handler = CellLines()
    saved = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


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
