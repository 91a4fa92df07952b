"""The harness of bench/gpu_check.py: checks run one after the other, each within its own time budget and
a total one, their figures kept in a JSON report that is rewritten after every check (a run that is killed
keeps what it measured), and the summary table. Nothing here knows what a check measures."""
from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import threading
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class CheckTimeout(Exception):
    pass


class Failed(Exception):        # a claim or tolerance did not hold (the check ran; its figures are kept)
    pass


class Skipped(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CheckTimeout in the main thread after ``seconds`` (a no-op where SIGALRM is unavailable)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def handler(_signum, _frame):
        raise CheckTimeout(f"stopped at its time budget of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _r(x, nd=3):
    return None if x is None else round(float(x), nd)


def _sig(x, n=3):
    """``x`` to ``n`` significant figures: rates that span GFLOP/s on a CPU to PFLOP/s on a GPU."""
    return None if x is None else float(f"{float(x):.{n}g}")


def _time_op(fn, device, reps: int, warm: int = 2) -> float:
    """Seconds per call of ``fn`` (device-synchronised)."""
    for _ in range(warm):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


class Context:
    """What the checks share: the device, the size (its row ``s`` of the size table), the output folder,
    the report, results of earlier checks (``cache``)."""

    def __init__(self, device: torch.device, size: str, out: Path, report: dict, sizes: dict):
        self.device, self.size, self.out, self.report = device, size, out, report
        self.s, self.cache, self.current = sizes[size], {}, None
        self.cuda = device.type == "cuda"

    def save(self) -> None:                     # atomically, checks in the order they ran
        from reasoning_lab.io import write_text

        write_text(self.out / "gpu-check.json", json.dumps(self.report, indent=1, default=str) + "\n")

    def partial(self, fig: dict) -> None:
        """Write the running check's figures so far (a killed run keeps them)."""
        if self.current is not None:
            self.report["checks"][self.current] = {"status": "running", "figures": fig}
            self.save()


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository in its own process group, stopped whole past ``timeout`` (torchrun's
    worker and a chapter's kernel included, so that none keeps holding the GPU)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "lib"), os.environ.get("PYTHONPATH")])),
           "REASONING_LAB_QUIET": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout))
    except BaseException as exc:                   # the time limit, or the check's own alarm
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise CheckTimeout(f"{' '.join(cmd[1:6])} ... ran past {timeout:.0f} s") from None
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def print_table(report: dict) -> None:
    meta = report["meta"]
    print(f"\nGPU check, {meta['date']}: {meta.get('gpu') or 'CPU mode (no CUDA device)'}; torch {meta['torch']}, "
          f"CUDA {meta['cuda']}; size {meta['size']}")
    print(f"{'check':<26} {'status':<7} {'time':>6}  result\n" + "-" * 100)
    for name, entry in report["checks"].items():
        line = entry.get("figures", {}).get("summary") or entry.get("error") or entry.get("reason") or ""
        if entry.get("status") in ("FAIL", "ERROR", "TIMEOUT") and entry.get("error"):
            line = (entry.get("figures", {}).get("summary", "") + "  " + entry["error"]).strip()
        secs = entry.get("seconds")
        print(f"{name:<26} {entry.get('status', '?'):<7} {f'{secs:5.0f}s' if secs is not None else '     -'}  {line[:160]}")
    counts: dict = {}
    for entry in report["checks"].values():
        counts[entry.get("status")] = counts.get(entry.get("status"), 0) + 1
    print("-" * 100 + "\n" + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"; JSON: {meta['json']}")


def run_checks(ctx, checks, functions: dict, only, skip, total_budget: float, scale: float, budget_kw=()) -> None:
    """Run ``checks`` (name, function name, budget in seconds) in order into ``ctx.report``: each within
    its budget times ``scale`` and what is left of ``total_budget`` (skipped under 5 s); its status is ok,
    SKIP, FAIL (a claim or tolerance), TIMEOUT or ERROR (with the traceback). ``budget_kw``: checks that
    take their budget as an argument (they stop their subprocesses themselves)."""
    start = time.perf_counter()
    for name, fn_name, budget in checks:
        if (only and name not in only) or name in skip:
            continue
        left = total_budget - (time.perf_counter() - start)
        budget = min(budget * scale, left)
        if budget < 5:
            ctx.report["checks"][name] = {"status": "SKIP", "reason": f"out of time ({left:.0f} s of the budget left)"}
            ctx.save()
            continue
        fig: dict = {}
        ctx.current = name
        entry = {"status": "ok", "budget_s": round(budget), "figures": fig}
        print(f"== {name} (budget {budget:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            with time_limit(budget + 5):
                functions[fn_name](ctx, fig, **({"budget": budget} if name in budget_kw else {}))
        except Skipped as err:
            entry.update(status="SKIP", reason=f"skipped: {err}")
        except Failed as err:
            entry.update(status="FAIL", error=str(err))
        except CheckTimeout as err:
            entry.update(status="TIMEOUT", error=str(err))
        except Exception as err:
            entry.update(status="ERROR", error=f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}",
                         traceback=traceback.format_exc(limit=12)[-3000:])
        finally:
            ctx.current = None
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        ctx.report["checks"][name] = entry
        free_memory(ctx.device)
        ctx.save()
        print(f"   {entry['status']}: {fig.get('summary') or entry.get('error') or entry.get('reason', '')}"[:200],
              flush=True)
    ctx.report["meta"]["seconds"] = round(time.perf_counter() - start, 1)
    ctx.save()
