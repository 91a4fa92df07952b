"""Run an experiment notebook at given parameters: jupytext source -> papermill -> executed notebook,
``metrics.json`` and figures in one output folder (a :class:`~.folder.RunFolder`). Re-running into the
same folder resumes from the notebook's checkpoints, or renders a finished run again."""
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
from .folder import FAILED, FINISHED, INTERRUPTED, LOCKED_ENV, TRAINED, RunFolder

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


def prepare(name: str, preset: str = "default", overrides: dict[str, Any] | None = None,
            allow_long: bool = False) -> tuple[experiments.Experiment, dict[str, Any]]:
    """The experiment and its validated parameters, checked against what this machine can do (the device,
    memory and time estimates): everything that can be refused before any work."""
    exp = experiments.get(name)
    params = exp.resolve(preset, overrides)          # every parameter checked before any work
    check_device(params.get("device", "auto"))
    from .cost import check_fits

    check_fits(exp, params, allow_long)
    return exp, params


def execute(name: str, preset: str = "default", overrides: dict[str, Any] | None = None,
            out: str | os.PathLike | None = None, quiet: bool = True, stream: bool = False,
            allow_long: bool = False, log=None, forward_signals: bool = True) -> dict[str, Any]:
    """Validate, then execute the notebook into ``out``; return its metrics.

    Every parameter is checked before anything is written (the device included: asking for ``cuda`` where
    there is none is a ``ValueError``), and so is the folder (:class:`~.folder.RunFolder`: a folder that
    holds another run, or that another run is writing to, is refused). With ``stream`` the notebook's
    output, a line per cell and the training progress bars (as text) go to this process's terminal while
    the notebook runs. ``log`` (default: standard error) gets one line saying where the run goes and
    whether it starts, resumes, or renders a finished run again.

    SIGINT or SIGTERM interrupts the running cell (training stops at the end of its step and writes its
    checkpoint) and raises :class:`Interrupted`; the kernel and its files are removed. A caller with
    handlers of its own (a sweep's job) passes ``forward_signals=False``."""
    exp, params = prepare(name, preset, overrides, allow_long)
    if not exp.notebook.exists():
        raise RunFailed(f"{name}: notebook {exp.notebook} is missing")
    out = Path(out) if out else default_out(name)
    folder = RunFolder(out, name, params)
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    try:
        log({"new": f"{name}: running into {out}",
             "resume": f"{name}: resuming the unfinished run in {out} from its checkpoints",
             TRAINED: f"{name}: {out} holds the trained run: rendering the chapter from its checkpoints",
             FINISHED: f"{name}: {out} holds the finished run: rendering the chapter again from its "
                       "checkpoints"}[folder.state])
        params["output_dir"] = str(out.resolve())
        metrics = _execute(exp, params, out, quiet, stream, forward_signals)
    except Interrupted:
        folder.set_status(INTERRUPTED)
        raise
    except BaseException as err:
        folder.set_status(FAILED, error=str(err).splitlines()[0][:300] if str(err) else type(err).__name__)
        raise
    else:
        folder.set_status(FINISHED)
        return metrics
    finally:
        folder.close()


class Interrupted(RunFailed):
    """The run was stopped by SIGINT or SIGTERM (its checkpoint written where it has one)."""


def _execute(exp, params: dict[str, Any], out: Path, quiet: bool, stream: bool,
             forward_signals: bool = True) -> dict[str, Any]:
    import jupytext
    import papermill as pm

    name = exp.name
    nb = jupytext.read(exp.notebook)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    executed = out / f"{name}.ipynb"
    partial = out / f".{name}.partial.ipynb"
    # the kernel inherits this environment: quiet runs draw no bars, streamed ones draw text bars; the
    # folder is locked by this process for the kernel
    env = {"REASONING_LAB_QUIET": "1" if quiet else "0", "REASONING_LAB_PROGRESS": "text" if stream else "",
           LOCKED_ENV: str(out.resolve())}
    stream_kw = {"stdout_file": sys.stdout, "stderr_file": sys.stderr} if stream else {}
    manager = ipc_kernel_manager()
    try:
        with _environ(env), _cell_log(len(nb.cells) + 1) if stream else contextlib.nullcontext(), \
                _forward_signals(manager, forward_signals) as stopped:
            pm.execute_notebook(nb, str(partial), parameters=_jsonable(params), kernel_name="python3",
                                cwd=str(exp.notebook.parent), progress_bar=False, log_output=stream,
                                report_mode=False, kernel_manager_class=manager,
                                iopub_timeout=IOPUB_TIMEOUT_S, **stream_kw)
    except pm.PapermillExecutionError as err:
        kept = out / f"{name}.failed.ipynb"
        with contextlib.suppress(OSError):
            os.replace(partial, kept)
        if stopped or err.ename == "KeyboardInterrupt":
            raise Interrupted(f"{name} interrupted in cell {err.exec_count}"
                              + (f" ({err.evalue})" if err.evalue else "")
                              + f"; run the same command again to resume from {out}") from None
        detail = f"{err.ename}: {err.evalue}" if str(err.evalue).strip() else \
            f"{err.ename} ({_last_line(err.traceback)})"
        raise RunFailed(f"{name} failed in cell {err.exec_count}: {detail} (executed notebook: {kept})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        if stopped:
            raise Interrupted(f"{name} interrupted; run the same command again to resume from {out}") from None
        raise
    os.replace(partial, executed)
    with contextlib.suppress(OSError):
        (out / f"{name}.failed.ipynb").unlink()
    metrics_file = out / "metrics.json"
    if not metrics_file.exists():
        raise RunFailed(f"{name} finished without writing {metrics_file}")
    return json.loads(metrics_file.read_text())


def _last_line(traceback_lines) -> str:
    import re

    text = "\n".join(traceback_lines or [])
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1][:200] if lines else "no message"


@contextlib.contextmanager
def _forward_signals(manager_class, enabled: bool = True):
    """While the notebook runs, SIGINT and SIGTERM go on to the kernel as SIGINT (which interrupts the cell;
    a training loop finishes its step and writes its checkpoint first). Yields a list that is non-empty
    once a signal came. The third signal stops the kernel outright."""
    import signal

    seen: list[int] = []

    def forward(signum, _frame):
        seen.append(signum)
        for km in list(manager_class.live):
            pid = km.kernel_pid()
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL if len(seen) >= 3 else signal.SIGINT)

    if enabled and threading_main():
        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    else:
        old = {}
    try:
        yield seen
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def check_device(name: str) -> None:
    """An explicitly requested accelerator must exist here (``ValueError`` naming ``device`` otherwise);
    ``auto`` and ``cpu`` always run, without importing torch."""
    if name not in ("auto", "cpu"):
        from ..devices import resolve_device

        resolve_device(name)


KERNEL_DIR_PREFIX = "reasoning-lab-kernel-"


def remove_stale_kernel_dirs() -> None:
    """Remove the kernel folders (sockets, connection file) that runs killed outright left in the temporary
    directory: each is named after the process that made it, and that process is gone."""
    import shutil
    import tempfile

    for d in Path(tempfile.gettempdir()).glob(KERNEL_DIR_PREFIX + "*"):
        try:
            pid = int(d.name[len(KERNEL_DIR_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ipc_kernel_manager():
    """A kernel manager class whose kernel talks over local IPC sockets (in a private temporary folder
    that also holds its connection file) instead of TCP on localhost: no port is opened, and the kernel
    has no unencrypted TCP to warn about. The folder is named after this process, so that the next run
    removes it if this one is killed outright (:func:`remove_stale_kernel_dirs`). ``live`` holds the
    managers whose kernel runs (for forwarding signals)."""
    import shutil
    import tempfile

    from jupyter_client.manager import KernelManager

    remove_stale_kernel_dirs()

    class IPCKernelManager(KernelManager):
        live: set = set()

        def __init__(self, **kw):
            if os.name == "posix":
                self._ipc_dir = tempfile.mkdtemp(prefix=f"{KERNEL_DIR_PREFIX}{os.getpid()}-")
                kw.setdefault("transport", "ipc")
                kw.setdefault("ip", os.path.join(self._ipc_dir, "kernel"))
                kw.setdefault("cache_ports", False)
                kw.setdefault("connection_file", os.path.join(self._ipc_dir, "connection.json"))
            super().__init__(**kw)
            IPCKernelManager.live.add(self)

        def kernel_pid(self) -> int | None:
            provisioner = getattr(self, "provisioner", None)
            process = getattr(provisioner, "process", None)
            return getattr(process, "pid", None) or getattr(provisioner, "pid", None)

        def cleanup_resources(self, restart: bool = False) -> None:
            super().cleanup_resources(restart=restart)
            if not restart:
                IPCKernelManager.live.discard(self)
                if getattr(self, "_ipc_dir", None):
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


def _distributed() -> bool:
    """True under ``torchrun`` (which sets ``TORCHELASTIC_RUN_ID``) or any launcher that sets a world size."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def train_only(name: str, preset: str = "default", overrides: dict[str, Any] | None = None,
               out: str | os.PathLike | None = None, allow_long: bool = False, log=None) -> dict[str, Any]:
    """Train the experiment's run (``Experiment.train``) into ``out`` without executing its chapter: the
    checkpoints, ``params.json``, ``metrics.json`` (the metrics the run determines), ``history.json``
    (each model's evaluation history) and the run's tables. The same validation and folder rules as
    :func:`execute`; ``reasoning-lab run`` with the same parameters into the same folder then renders the
    chapter from the checkpoints without training again.

    Under ``torchrun`` an experiment declared ``data_parallel`` trains with DDP (gloo on CPUs, NCCL on
    GPUs, one GPU per local rank); rank 0 checks and writes the folder."""
    exp, params = prepare(name, preset, overrides, allow_long)
    if not exp.trainer:
        raise ValueError(f"experiment {name} has no training run of its own (it integrates its dynamics in "
                         "the chapter): use `reasoning-lab run`")
    if out is None:
        raise ValueError("train needs --out DIR: the folder that keeps the trained run")
    distributed = _distributed()
    if distributed and not exp.data_parallel:
        parallel = [e.name for e in experiments.available() if e.data_parallel]
        raise ValueError(f"{name} does not train data-parallel; start it without torchrun (data-parallel: "
                         f"{', '.join(parallel)})")
    out = Path(out)
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    import torch

    from ..devices import resolve_device
    from ..io import write_csv, write_json

    device = resolve_device(params["device"])
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    folder = None
    try:
        error = ""
        if rank == 0:
            try:
                folder = RunFolder(out, name, params)
            except ValueError as err:
                error = str(err)
        if distributed:                      # every rank stops if the folder is refused
            shared = [error]
            dist.broadcast_object_list(shared, src=0)
            error = shared[0]
        if error:
            raise ValueError(error)
        if rank == 0:
            log({"new": f"{name}: training into {out}" + (f" on {world} processes" if world > 1 else ""),
                 "resume": f"{name}: resuming the unfinished run in {out} from its checkpoints",
                 TRAINED: f"{name}: {out} holds the trained run: loading it (no training)",
                 FINISHED: f"{name}: {out} holds the finished run: loading it (no training)"}[folder.state])
            params["output_dir"] = str(out.resolve())
            write_json(out / "params.json", params)
        from ..devices import seed_everything
        from .session import thread_count

        threads = thread_count(params)
        if threads:
            torch.set_num_threads(threads)
        seed_everything(params["seed"])
        checkpoints = lambda n: out / "checkpoints" / f"{n}.pt"
        try:
            trained = exp.train(params, device, checkpoints, progress=None if rank == 0 else False)
        except KeyboardInterrupt as err:
            if folder is not None:
                folder.set_status(INTERRUPTED)
            raise Interrupted(f"{name} interrupted" + (f" ({err})" if str(err) else "")
                              + f"; run the same command again to resume from {out}") from None
        metrics = {**trained.metrics, "world_size": world, "distributed": int(distributed)}
        if rank == 0:
            for table, rows in trained.tables.items():
                write_csv(out / table, rows)
            write_json(out / "history.json", [h.state_dict() for h in trained.histories])
            write_json(out / "metrics.json", metrics)
            folder.set_status(TRAINED)
            how = trained.resumed()
            if how:
                log(f"{name}: {how}")
        return metrics
    except BaseException as err:
        if folder is not None and not isinstance(err, (Interrupted, ValueError)):
            folder.set_status(FAILED, error=str(err).splitlines()[0][:300] if str(err) else type(err).__name__)
        raise
    finally:
        if folder is not None:
            folder.close()
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
