"""Shared by the sweep tests: a tiny reversal-curse configuration (the one notebook small enough here that
writes training checkpoints), the CLI as a subprocess, and a way to find every process a test started."""
import csv
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import torch

# seconds of kernel start-up and a few of training; a checkpoint every epochs/10
TINY = ["-p", "seeds=1", "-p", "vocab_size=40", "-p", "embed_dim=16", "-p", "n_layers=1"]
MARK = "REASONING_LAB_SWEEP_TEST"


def marked_env(**extra) -> tuple[dict, str]:
    """The environment for a sweep under test, with a marker that every process it starts inherits."""
    mark = uuid.uuid4().hex
    return {**os.environ, MARK: mark, "REASONING_LAB_THREADS": "1", **extra}, mark


def cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "reasoning_lab.experiments.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, **kw)


def marked_processes(mark: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(MARK) == mark:
                found.append(p)
        except psutil.Error:
            continue
    return found


def wait_no_marked(mark: str, timeout: float = 20.0) -> list[str]:
    """Wait until no process carries ``mark``; return the command lines of any that remain."""
    deadline = time.time() + timeout
    while True:
        left = marked_processes(mark)
        if not left or time.time() > deadline:
            out = []
            for p in left:
                try:
                    out.append(f"{p.pid}: {' '.join(p.cmdline())}")
                except psutil.Error:
                    pass
            return out
        time.sleep(0.3)


def sweep_rows(out: Path, key: str) -> dict[str, dict]:
    """The rows of ``sweep.csv`` by the value of the grid parameter ``key``."""
    with open(out / "sweep.csv") as fh:
        return {r[key]: r for r in csv.DictReader(fh)}


def checkpoint_files(point: Path) -> list[Path]:
    """A point's checkpoints, without the hidden temporary file of a write that a kill interrupted (the
    rename that publishes a checkpoint never happened for it)."""
    folder = point / "checkpoints"
    return sorted(f for f in folder.glob("*.pt") if not f.name.startswith(".")) if folder.exists() else []


def checkpoint_epoch(point: Path) -> int | None:
    files = checkpoint_files(point)
    if not files:
        return None
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    if "epoch" in state:
        return int(state["epoch"])
    # the training loop's checkpoint counts steps; its history records the epoch of each evaluation,
    # and a checkpoint is written at an evaluated epoch
    epochs = state["histories"][0]["data"].get("epoch", [])
    return int(epochs[-1]) if epochs else None


def wait_for_checkpoint(point: Path, proc=None, timeout: float = 300.0) -> int:
    """Wait until the point has written a mid-run checkpoint; return its epoch."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {point.name} wrote a checkpoint: "
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        try:
            epoch = checkpoint_epoch(point)
        except Exception:       # a file being renamed into place
            epoch = None
        if epoch:
            return epoch
        time.sleep(0.2)
    raise AssertionError(f"{point.name} wrote no checkpoint within {timeout} s")
