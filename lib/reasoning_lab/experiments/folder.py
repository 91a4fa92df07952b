"""A run folder holds exactly one run.

``run.json`` records what the folder holds: the experiment, the parameters that decide its results (not
where or how fast it runs: :data:`RUN_ONLY_PARAMS`), the library version, and the run's status
(``running``, ``interrupted``, ``failed``, ``trained`` by ``reasoning-lab train``, ``finished`` by the
chapter). A run into a folder that records another run is refused before anything is written, naming
what differs; the same run resumes from its checkpoints; a finished one renders again without training.
While a run writes, the folder is locked (an advisory ``flock`` on ``.lock``, released by the system when
the process ends, however it ends): a second run into it is refused at once. The chapter's kernel,
started by the command that holds the lock, is told so through the environment and does not lock again.
"""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from ..io import write_json

RECORD = "run.json"
LOCK = ".lock"
RUN_ONLY_PARAMS = ("output_dir", "device", "threads", "workers")    # where and how fast, not what
LOCKED_ENV = "REASONING_LAB_LOCKED_FOLDER"     # the folder a parent process holds locked for this one
RUNNING, INTERRUPTED, FAILED, TRAINED, FINISHED = "running", "interrupted", "failed", "trained", "finished"


class FolderError(ValueError):
    """An output folder that cannot take this run (one line: which folder, why, what to do)."""


def identity(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that decide a run's results, as JSON would hold them."""
    keep = {k: v for k, v in params.items() if k not in RUN_ONLY_PARAMS}
    return json.loads(json.dumps(keep, default=list))


def _version() -> str:
    from .. import __version__

    return __version__


def read_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's run record, or None when there is none (or it cannot be read)."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def differences(record: dict[str, Any], experiment: str, params: dict[str, Any]) -> str | None:
    """Why a folder's record is not this run, in a few words (None when it is)."""
    if record.get("experiment") != experiment:
        return f"holds a run of {record.get('experiment')!r}, not {experiment!r}"
    mine, theirs = identity(params), record.get("params", {})
    keys = sorted(set(mine) | set(theirs))
    diff = [k for k in keys if mine.get(k, "<unset>") != theirs.get(k, "<unset>")]
    if not diff:
        return None
    shown = ", ".join(f"{k}={theirs.get(k, '<unset>')!r} (this run: {mine.get(k, '<unset>')!r})" for k in diff[:4])
    more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
    return f"holds a run of {experiment} with {shown}{more}"


def check_path(out: Path) -> None:
    """One line for an output path that cannot be a run folder: a file, under a file, not writable."""
    if out.exists() and not out.is_dir():
        raise FolderError(f"--out {out}: is a file, not a folder; give a folder for the run")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FolderError(f"--out {out}: {parent} is a file, so the folder cannot be made there")
            if not out.exists() and not os.access(parent, os.W_OK | os.X_OK):
                raise FolderError(f"--out {out}: {parent} is not writable; choose a folder you can write to")
            break
    if out.exists() and not os.access(out, os.W_OK | os.X_OK):
        raise FolderError(f"--out {out}: the folder is not writable; choose a folder you can write to")


class RunFolder:
    """One run's output folder, opened for writing: checked against its record, locked, recorded.

    ``state`` says what the folder held when it was opened: ``new`` (nothing), ``resume`` (this run,
    unfinished: it continues from its checkpoints) or ``trained``/``finished`` (this run, done: it renders
    again without training)."""

    def __init__(self, path: str | os.PathLike, experiment: str, params: dict[str, Any], lock: bool = True):
        self.path = Path(path)
        self.experiment, self.params = experiment, params
        self._lock_fd: int | None = None
        check_path(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FolderError(f"--out {self.path}: cannot be made ({err.strerror})") from None
        held_for_us = os.environ.get(LOCKED_ENV) == str(self.path.resolve())
        if lock and not held_for_us:
            self._lock()
        try:
            record = read_record(self.path)
            if record is None:
                others = [p.name for p in self.path.iterdir() if p.name not in (LOCK, RECORD)]
                if others:
                    raise FolderError(f"--out {self.path}: the folder is not empty ({', '.join(sorted(others)[:3])}"
                                      f"{', ...' if len(others) > 3 else ''}) and holds no run record; "
                                      "give an empty or new folder")
                self.state = "new"
                self.record = {"experiment": experiment, "params": identity(params), "version": _version(),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": RUNNING}
            else:
                why = differences(record, experiment, params)
                if why:
                    raise FolderError(f"--out {self.path} {why}; use another folder (a folder holds one run)")
                self.state = record.get("status") if record.get("status") in (TRAINED, FINISHED) else "resume"
                self.record = record
            self.record.update(status=RUNNING if self.state in ("new", "resume") else self.record["status"],
                               opened=time.strftime("%Y-%m-%dT%H:%M:%S"), version=_version())
            write_json(self.path / RECORD, self.record)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                holder = (self.path / LOCK).read_text().strip() or "another process"
                raise FolderError(f"--out {self.path}: another run is writing to this folder ({holder}); "
                                  "wait for it, or use another folder") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock_fd = fd

    @property
    def done(self) -> bool:
        return self.state in (TRAINED, FINISHED)

    def checkpoint(self, name: str) -> Path:
        """Where the run keeps its checkpoint ``name``."""
        return self.path / "checkpoints" / f"{name}.pt"

    def set_status(self, status: str, **extra: Any) -> None:
        """Record the run's status (and anything else, e.g. an error line) in ``run.json``."""
        if status == TRAINED and self.record.get("status") == FINISHED:
            status = FINISHED                         # a re-trained folder whose chapter already ran
        self.record.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)
        write_json(self.path / RECORD, self.record)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)            # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
