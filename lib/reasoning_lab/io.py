"""Files and console: atomic writes (JSON, CSV, text, torch checkpoints), flat metrics, and the progress
bar that shows only when a person is watching. (What a training checkpoint holds is the loop's business:
:func:`reasoning_lab.train.fit`.)"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def quiet() -> bool:
    """True inside the book build, tests and batch runs (set ``REASONING_LAB_QUIET=1``)."""
    return os.environ.get("REASONING_LAB_QUIET", "") not in ("", "0")


def progress(iterable: Iterable, total: int | None = None, desc: str | None = None, enabled: bool | None = None,
             initial: int = 0):
    """A progress bar when a person is watching, the bare iterable otherwise (``initial``: items done
    before, e.g. by the run a resumed one continues)."""
    if enabled is None:
        enabled = not quiet()
    if not enabled:
        return iterable
    if os.environ.get("REASONING_LAB_PROGRESS") == "text":
        # a text bar, also inside a kernel: `reasoning-lab run --verbose` streams it to the terminal
        from tqdm.std import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr, ncols=88,
                    mininterval=0.5, initial=initial)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr, initial=initial)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds. The file
    gets the usual permissions of a new file (``0666`` less the umask), not ``mkstemp``'s private ``0600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    # mkstemp creates the file private (0600) and the rename keeps that mode: give the finished file the
    # mode any new file gets here (0644 under the usual umask 022)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """A table of dict rows (columns in order of first appearance), written atomically."""
    import csv
    import io

    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _scalar_tensor(x) -> bool:
    # without importing PyTorch: where it has not been imported, no tensor exists
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor) and x.numel() == 1


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if _scalar_tensor(x):
        return x.item()
    if isinstance(x, (tuple, set)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float | int | str]:
    """metrics.json is flat: numbers and strings only."""
    out = {}
    for k, v in metrics.items():
        if _scalar_tensor(v):
            v = v.item()
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, (int, float, str)):
            raise TypeError(f"metric {k!r} must be a number or a string, got {type(v).__name__}")
        out[k] = v
    return out
