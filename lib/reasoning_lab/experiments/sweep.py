"""Sweeps: every point of a parameter grid is one job, run with submitit on this machine (one process per
GPU or per CPU slot) or on a Slurm cluster, each executing the notebook into ``OUT/<point>/``.

A point that fails is recorded and the others go on; ``OUT/sweep.csv`` (rewritten atomically as points
finish) has one row per point with its status. Each job also leaves ``OUT/jobs/<point>.status.json``; each
point folder is a run folder (:mod:`.folder`) whose record says which run it holds. Running the same
sweep again into the same ``OUT`` skips the points whose record says they are finished with the same
parameters and reruns the others, which resume from their checkpoints; a point folder that records a
run with other parameters, or a sweep folder of another experiment (``OUT/sweep.json``), is refused
before anything starts. Every point is checked as ``run`` checks it (parameters, device, memory, time)
before any job starts. Ctrl-C or SIGTERM cancels the sweep's jobs: local jobs are stopped with every
process they started, Slurm jobs with ``scancel``.

State on Slurm comes from ``squeue`` and the jobs' own files, never from ``sacct``: clusters without an
accounting database are common, and ``squeue`` keeps finished jobs for ``MinJobAge`` (five minutes by
default); a job that has left ``squeue`` has ended, and its files say how.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import write_csv, write_json
from . import registry as experiments
from . import runner
from .folder import FINISHED, check_path, differences, read_record

DONE, FAILED, CANCELLED, INTERRUPTED = "done", "failed", "cancelled", "interrupted"
PENDING, SUBMITTED = "pending", "submitted"        # not started yet; handed to the launcher
STATUS_FILE = "status.json"
JOBS_DIR = "jobs"                       # submitit's pickles and the job logs, inside the sweep's folder
LOCAL_TIMEOUT_MIN = 30 * 24 * 60        # local jobs without --time: no practical limit
# Slurm job states after which a job runs no more (squeue's %T names).
TERMINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT", "ENDED"}


class SweepFailed(runner.RunFailed):
    pass


@dataclass
class Launcher:
    """Where the jobs of a sweep run. ``local``: ``devices`` (one job per GPU id at a time) or ``jobs``
    CPU slots. ``slurm``: one batch job per point with the given partition, time limit (minutes), GPUs
    and extra ``sbatch`` options."""

    kind: str = "local"
    devices: list[str] | None = None
    jobs: int = 1
    partition: str | None = None
    time_min: int | None = None
    gpus_per_job: int = 0
    sbatch_opts: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    poll_s: float | None = None

    def check(self) -> None:
        if self.kind not in ("local", "slurm"):
            raise ValueError(f"--launcher {self.kind!r} is not allowed: expected 'local' or 'slurm'")
        if self.kind == "local":
            extra = [flag for flag, v in (("--partition", self.partition), ("--gpus-per-job", self.gpus_per_job),
                                          ("--sbatch-opt", self.sbatch_opts)) if v]
            if extra:
                raise ValueError(f"{extra[0]} applies to --launcher slurm only")
            if self.devices is not None and not self.devices:
                raise ValueError("--devices expects GPU ids such as 0,1,2,3")
            if self.devices and len(set(self.devices)) != len(self.devices):
                raise ValueError(f"--devices lists a GPU twice: {','.join(self.devices)}")
            if self.devices and self.jobs != 1:
                raise ValueError("--devices and --jobs exclude each other: --devices runs one job per GPU")
            if self.jobs < 1:
                raise ValueError(f"--jobs {self.jobs} is not allowed: expected a positive integer")
        else:
            if self.devices:
                raise ValueError("--devices applies to --launcher local; on Slurm use --gpus-per-job")
            if self.jobs != 1:
                raise ValueError("--jobs applies to --launcher local; Slurm decides how many jobs run at once")
            if self.time_min is None:
                raise ValueError("--launcher slurm needs --time (minutes, HH:MM:SS or D-HH:MM:SS)")
            if self.gpus_per_job < 0:
                raise ValueError(f"--gpus-per-job {self.gpus_per_job} is not allowed: expected 0 or more")
            for key in self.sbatch_opts:
                if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
                    raise ValueError(f"--sbatch-opt {key!r} is not allowed: expected a long sbatch option "
                                     "name without dashes, e.g. account=abc or qos=high")

    def slots(self) -> list[str | None]:
        if self.kind == "slurm":
            return []
        return list(self.devices) if self.devices else [None] * self.jobs

    def describe(self) -> str:
        if self.kind == "slurm":
            return "Slurm" + (f" partition {self.partition}" if self.partition else "")
        if self.devices:
            return f"GPUs {','.join(self.devices)}, one job each"
        return f"{self.jobs} CPU job{'s' if self.jobs > 1 else ''} at a time"


def parse_time(text: str) -> int:
    """Slurm's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in whole
    minutes, rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--time {text!r} is not allowed: expected minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:                                   # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:                                    # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:                                    # MM:SS
        seconds = a * 60 + b
    else:                                                  # MM
        seconds = a * 60
    if seconds <= 0:
        raise ValueError(f"--time {text!r} is not allowed: expected a positive duration")
    return -(-seconds // 60)


# ---------------------------------------------------------------------------------------------------
# One point, inside its job


def status_path(folder: Path) -> Path:
    """Where a point's job status lives: beside the job logs (``OUT/jobs/<point>.status.json``), so that
    the point's own folder holds its run and nothing else."""
    folder = Path(folder)
    return folder.parent / JOBS_DIR / f"{folder.name}.{STATUS_FILE}"


def read_status(folder: Path) -> dict[str, Any]:
    try:
        return json.loads(status_path(folder).read_text())
    except (OSError, ValueError):
        return {}


def _write_status(folder: Path, status: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):      # a folder that cannot hold it fails the point anyway
        write_json(status_path(folder), status)


def finished_metrics(folder: Path) -> dict[str, Any] | None:
    """The metrics of a point that is done (its run record says finished, ``metrics.json`` present),
    else None. Whether the record is this point's run is checked before (:func:`run_sweep`)."""
    folder = Path(folder)
    if (read_record(folder) or {}).get("status") != FINISHED or not (folder / "metrics.json").is_file():
        return None
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def stop_descendants(pid: int, grace_s: float = 0.5) -> None:
    """Stop every process below ``pid``: SIGTERM, then SIGKILL after ``grace_s``. The notebook kernel
    runs in a session of its own (so a signal to the job's process group misses it); walking the
    process tree finds it."""
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return
    _stop(procs, grace_s)


def _stop(procs, grace_s: float) -> None:
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def run_point(name: str, preset: str, overrides: dict[str, Any], folder: str,
              cuda_devices: str | None = None) -> dict[str, Any]:
    """The job of one sweep point: ``runner.execute`` into ``folder``, its job status in :func:`status_path`.

    SIGTERM (``scancel``, the local launcher's cancel) or SIGINT stops the notebook kernel too and
    records the point as cancelled; its checkpoints stay for the next run."""
    folder = Path(folder)
    status = {"status": "running", "host": socket.gethostname(), "pid": os.getpid(),
              "job": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", ""),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def on_signal(signum, frame):
        _write_status(folder, {**status, "status": CANCELLED, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "error": f"stopped by {signal.Signals(signum).name}"})
        stop_descendants(os.getpid())
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if cuda_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices
    _write_status(folder, status)
    runner.skip_iri_checker()
    try:
        metrics = runner.execute(name, preset, overrides, folder, quiet=True, forward_signals=False)
    except Exception as err:
        _write_status(folder, {**status, "status": FAILED, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"})
        raise
    _write_status(folder, {**status, "status": DONE, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return metrics


# ---------------------------------------------------------------------------------------------------
# Slurm without sacct


def _squeue_watcher_class():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        """Job states from ``squeue`` (which works without slurmdbd); a job squeue no longer lists has
        ended ("ENDED"), and its result and status files say how."""

        def _make_command(self):
            if not self._registered - self._finished:
                return None
            return ["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T|%N"]

        def read_info(self, string):
            if not isinstance(string, str):
                string = string.decode()
            info = {}
            for line in string.splitlines():
                parts = line.strip().split("|")
                if len(parts) >= 2 and parts[0]:
                    info[parts[0]] = {"JobID": parts[0], "State": parts[1].split()[0],
                                      "NodeList": parts[2] if len(parts) > 2 else ""}
            for job_id in self._registered - self._finished:
                info.setdefault(job_id, {"JobID": job_id, "State": "ENDED", "NodeList": ""})
            return info

        def is_done(self, job_id, mode="standard"):
            return self.get_state(job_id, mode=mode).upper() in TERMINAL

    return SqueueWatcher


_WATCHER = None


def _slurm_executor(folder: Path):
    global _WATCHER
    import submitit
    from submitit.slurm.slurm import SlurmJob

    if _WATCHER is None:
        _WATCHER = _squeue_watcher_class()(delay_s=5)

    class LabSlurmJob(SlurmJob):
        watcher = _WATCHER

    class LabSlurmExecutor(submitit.SlurmExecutor):
        job_class = LabSlurmJob

    return LabSlurmExecutor(folder=folder)


def _slurm_parameters(launcher: Launcher, job_name: str) -> dict[str, Any]:
    params: dict[str, Any] = {"job_name": job_name, "time": launcher.time_min, "nodes": 1,
                              "ntasks_per_node": 1}
    if launcher.partition:
        params["partition"] = launcher.partition
    if launcher.gpus_per_job:
        params["gpus_per_node"] = launcher.gpus_per_job
    if launcher.sbatch_opts:
        params["additional_parameters"] = dict(launcher.sbatch_opts)
    return params


def sbatch_script(launcher: Launcher, folder: Path, job_name: str) -> str:
    """The batch script submitit writes for one point (what ``--dry-run`` shows)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, **_slurm_parameters(launcher, job_name))


# ---------------------------------------------------------------------------------------------------
# The sweep


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM ends the sweep the way Ctrl-C does (the jobs are cancelled). SIGINT is handled too, even
    where it was inherited as ignored (a command started in the background by a script)."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _children_ignore_sigint():
    """Processes started here ignore SIGINT (an ignored signal stays ignored across exec, and Python keeps
    it so): Ctrl-C in the terminal reaches the whole process group, and the sweep itself cancels its jobs,
    so that a launcher's controller does not die of it with a traceback of its own. A point's job installs
    its own handler."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _job_error(job) -> str:
    with contextlib.suppress(Exception):
        exc = job.exception()
        if exc is not None:
            lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
            if lines:
                return lines[-1]
    return ""


def check_devices(devices: list[str] | None) -> None:
    """``--devices`` names GPUs this machine has (one line otherwise, before any job starts)."""
    if not devices:
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--devices {','.join(devices)} is not allowed here: no CUDA device is available "
                         "(leave --devices out to run the points on the CPU)")
    count = torch.cuda.device_count()
    bad = [d for d in devices if not d.isdigit() or int(d) >= count]
    if bad:
        raise ValueError(f"--devices {','.join(devices)} is not allowed: expected GPU ids from 0 to {count - 1}")


SWEEP_RECORD = "sweep.json"


def _check_sweep_folder(out: Path, name: str, preset: str, base: dict[str, Any]) -> None:
    """``OUT/sweep.json`` says which experiment's sweep the folder holds; another experiment's is refused."""
    check_path(out)
    try:
        record = json.loads((out / SWEEP_RECORD).read_text())
    except (OSError, ValueError):
        record = None
    if record is not None and record.get("experiment") != name:
        raise ValueError(f"--out {out} holds a sweep of {record.get('experiment')!r}, not {name!r}; use another "
                         "folder")
    if record is None and out.is_dir() and any(p for p in out.iterdir()):
        raise ValueError(f"--out {out}: the folder is not empty and holds no sweep record; give an empty or new "
                         "folder")


def run_sweep(name: str, grid: dict[str, list[str]], preset: str = "default",
              overrides: dict[str, Any] | None = None, out: str | os.PathLike | None = None,
              launcher: Launcher | None = None, log=print, allow_long: bool = False) -> list[dict[str, Any]]:
    """Run every point of ``grid`` as one job; return the rows of ``sweep.csv``. Raises SweepFailed at the
    end, naming them, if any point did not finish."""
    launcher = launcher or Launcher()
    launcher.check()
    check_devices(launcher.devices)
    experiments.get(name)
    base = dict(overrides or {})
    if launcher.devices and "device" not in base and "device" not in grid:
        base["device"] = "cuda"
    empty = [k for k, values in grid.items() if not values]
    if empty:
        raise ValueError(f"--grid {empty[0]}= has no values: expected --grid {empty[0]}=V1,V2,...")
    points = runner.grid_points(grid)
    resolved = [runner.prepare(name, preset, {**base, **point}, allow_long)[1]   # every point checked first,
                for point in points]                                             # as `run` checks it
    labels = [runner.point_label(p) for p in points]
    if len(set(labels)) != len(labels):
        raise ValueError("--grid gives two points the same folder name: " + ", ".join(
            sorted({l for l in labels if labels.count(l) > 1})))
    out = Path(out) if out else runner.RUNS / name / ("sweep-" + time.strftime("%Y%m%d-%H%M%S"))
    _check_sweep_folder(out, name, preset, base)
    for label, params in zip(labels, resolved):
        record = read_record(out / label)
        why = record and differences(record, name, params)
        if why:
            raise ValueError(f"sweep point {out / label} {why}; use another --out (a folder holds one run)")
    done = {l: finished_metrics(out / l) for l in labels}
    todo = [(l, p) for l, p in zip(labels, points) if done[l] is None]

    if launcher.dry_run:
        _print_plan(name, preset, base, out, launcher, labels, points, done, log)
        return []

    if launcher.kind == "slurm" and todo:
        import shutil

        missing = [c for c in ("sbatch", "squeue", "scancel", "srun") if shutil.which(c) is None]
        if missing:
            raise ValueError(f"--launcher slurm needs {', '.join(missing)} on PATH: run the sweep where jobs "
                             "can be submitted (a login node), or use --launcher local")
    rows: dict[str, dict[str, Any]] = {}
    for label, point in zip(labels, points):
        rows[label] = {**point, "status": DONE if done[label] is not None else PENDING, "error": "",
                       "job": read_status(out / label).get("job", "") if done[label] is not None else "",
                       "log": "", **(done[label] or {})}

    def save():
        write_csv(out / "sweep.csv", [rows[l] for l in labels])

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SWEEP_RECORD, {"experiment": name, "preset": preset, "overrides": base,
                                    "grid": {k: list(v) for k, v in grid.items()}})
    save()
    log(f"sweep {name}: {len(points)} points, {len(points) - len(todo)} already done, {len(todo)} to run "
        f"({launcher.describe()}) -> {out}")
    if todo:
        _launch(name, preset, base, out, launcher, todo, rows, save, log)
    bad = [l for l in labels if rows[l]["status"] != DONE]
    if bad:
        raise SweepFailed(f"{len(bad)} of {len(labels)} sweep points did not finish: "
                          + "; ".join(f"{l} ({rows[l]['status']}" + (f": {rows[l]['error']}" if rows[l]['error']
                                                                     else "") + ")" for l in bad)
                          + f". Statuses in {out / 'sweep.csv'}; run the same command again to resume them")
    return [rows[l] for l in labels]


def _print_plan(name, preset, base, out, launcher, labels, points, done, log):
    log(f"dry run: sweep {name} (preset {preset}) -> {out}, {launcher.describe()}")
    for label, point in zip(labels, points):
        state = "done, skipped" if done[label] is not None else "would run"
        log(f"  {label}: {state}; parameters {json.dumps({**base, **point})}; output {out / label}")
    todo = [l for l in labels if done[l] is None]
    if launcher.kind == "slurm" and todo:
        log(f"each point is one batch job; the script of {todo[0]} (the others differ in --job-name):")
        log(sbatch_script(launcher, out / JOBS_DIR, f"{name}:{todo[0]}"))


def _launch(name, preset, base, out, launcher, todo, rows, save, log):
    folder = out / JOBS_DIR
    if launcher.kind == "slurm":
        executor = _slurm_executor(folder)
    else:
        import submitit

        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=launcher.time_min or LOCAL_TIMEOUT_MIN)
    poll = launcher.poll_s or (0.5 if launcher.kind == "local" else 3.0)
    free = launcher.slots()
    pending = list(todo)
    running: dict[str, tuple[Any, str | None]] = {}

    def finish(label, job, cancelled_here=False):
        point_dir = out / label
        metrics = finished_metrics(point_dir)
        row = rows[label]
        row["job"], row["log"] = job.job_id, str(job.paths.stderr)
        if metrics is not None:
            row.update(status=DONE, error="", **metrics)
            shown = {k: metrics[k] for k in experiments.get(name).metrics if k in metrics} or metrics
            log(f"  {label}: done " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in shown.items()))
            return
        st = read_status(point_dir)
        state = st.get("status")
        if cancelled_here:
            row["status"] = INTERRUPTED
        elif state in (FAILED, CANCELLED):
            row["status"] = state
        else:
            sched = "" if launcher.kind == "local" else job.watcher.get_state(job.job_id, mode="cache")
            row["status"] = CANCELLED if sched.startswith("CANCELLED") else FAILED
        error = st.get("error") if state in (FAILED, CANCELLED) else ""
        row["error"] = error or _job_error(job) or "the job ended without a result"
        log(f"  {label}: {row['status']}: {row['error']} (log {row['log']})")

    with _sigterm_as_interrupt():
        try:
            while pending or running:
                while pending and (launcher.kind == "slurm" or free):
                    label, point = pending.pop(0)
                    slot = free.pop(0) if launcher.kind == "local" else None
                    if launcher.kind == "slurm":
                        executor.update_parameters(**_slurm_parameters(launcher, f"{name}:{label}"))
                    with _children_ignore_sigint():
                        job = executor.submit(run_point, name, preset, {**base, **point}, str(out / label), slot)
                    running[label] = (job, slot)
                    rows[label].update(status=SUBMITTED, job=job.job_id, log=str(job.paths.stderr), error="")
                    save()
                if launcher.kind == "slurm":
                    _WATCHER.update()
                for label, (job, slot) in list(running.items()):
                    ended = (job.done() if launcher.kind == "local" else
                             job.paths.result_pickle.exists() or job.watcher.is_done(job.job_id, mode="cache"))
                    if ended:
                        del running[label]
                        if launcher.kind == "local":
                            free.append(slot)
                        finish(label, job)
                        save()
                if pending or running:
                    time.sleep(poll)
        except KeyboardInterrupt:
            old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                log(f"interrupted: cancelling {len(running)} running job(s)")
                _cancel(launcher, [job for job, _ in running.values()])
                for label, (job, _) in running.items():
                    finish(label, job, cancelled_here=True)
                save()
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
            raise


def _cancel(launcher: Launcher, jobs: list) -> None:
    if not jobs:
        return
    if launcher.kind == "slurm":
        subprocess.call(["scancel", *[j.job_id for j in jobs]])
        deadline = time.time() + 120
        while time.time() < deadline:                   # wait until Slurm has ended them
            _WATCHER.update()
            if all(j.watcher.is_done(j.job_id, mode="cache") for j in jobs):
                return
            time.sleep(1.0)
        return
    import psutil

    procs = []
    for job in jobs:
        with contextlib.suppress(psutil.Error, ValueError):
            controller = psutil.Process(int(job.job_id))
            procs += [controller, *controller.children(recursive=True)]
    for job in jobs:                        # the job's own handler stops its notebook kernel
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.ppid() == int(job.job_id):
                    p.send_signal(signal.SIGTERM)
        job.cancel(check=False)
    _, alive = psutil.wait_procs(procs, timeout=5)
    _stop(alive, 0.5)
