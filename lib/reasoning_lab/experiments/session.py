"""What a notebook calls first: ``run = lab.start("name", globals())``.

It validates the parameters cell (after papermill's injection), sets the CPU threads (the one place
that does: :func:`thread_count`), seeds everything, picks the device, opens ``output_dir`` as the run's
folder when one is given (:class:`~.folder.RunFolder`: checked against what it holds, locked), trains
the experiment's run (:meth:`Run.train`, the study's one definition of it), and gives the notebook one
place to record metrics and figures (``metrics.json`` and PNGs, each written atomically).
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..devices import resolve_device, seed_everything
from ..io import flat_metrics, write_json
from ..plots import set_figure_chapter, use_book_style
from . import registry as experiments
from .folder import RUN_ONLY_PARAMS, RunFolder  # noqa: F401  (RUN_ONLY_PARAMS: where, not what)


class Run:
    def __init__(self, name: str, params: dict[str, Any]):
        set_figure_chapter(name)
        self.name = name
        self.params = params
        self.p = SimpleNamespace(**params)
        self.device = resolve_device(params["device"])
        self.out = Path(params["output_dir"]) if params.get("output_dir") else None
        self.metrics: dict[str, Any] = {}
        self.folder = RunFolder(self.out, name, params) if self.out is not None else None
        if self.out is not None:
            write_json(self.out / "params.json", params)

    def train(self, **loop):
        """Train this experiment's run (``Experiment.train``: the study's one definition, which the
        command line, sweeps and the GPU check call too), checkpointed in the run's folder when there is
        one; says so when it resumed or found the run finished. ``loop``: LoopConfig fields to override.
        Returns the :class:`~reasoning_lab.train.Trained` run."""
        trained = experiments.get(self.name).train(self.params, self.device, self.checkpoint, **loop)
        how = trained.resumed()
        if how:
            print(f"{how} ({self.out})")
        return trained

    def record(self, **metrics: Any) -> dict[str, Any]:
        """Add metrics (numbers or strings) and rewrite ``metrics.json`` atomically."""
        self.metrics.update(flat_metrics(metrics))
        if self.out is not None:
            write_json(self.out / "metrics.json", self.metrics)
        collect = os.environ.get("REASONING_LAB_METRICS_DIR")
        if collect:  # notebook tests gather every notebook's metrics in one folder
            write_json(Path(collect) / f"{self.name}.json", self.metrics)
        return self.metrics

    def checkpoint(self, name: str) -> Path | None:
        """Where a training checkpoint lives for this run (None: no output_dir, no checkpoints). The
        folder holds this run only (its record says which), so the name is all it needs."""
        return None if self.folder is None else self.folder.checkpoint(name)

    def savefig(self, fig, name: str) -> None:
        """Save ``fig`` as ``<output_dir>/<name>.png`` (when there is an output folder), and measure its
        smallest text as the book shows it (``plots.note_figure``)."""
        from ..plots import note_figure

        note_figure(fig, name)
        if self.out is None:
            return
        from ..io import atomic_path

        with atomic_path(self.out / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")

    def summary(self) -> str:
        width = max((len(k) for k in self.metrics), default=0)
        lines = []
        for k, v in self.metrics.items():
            lines.append(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
        return "\n".join(lines)


THREADS_ENV = "REASONING_LAB_THREADS"


def thread_count(params: dict[str, Any]) -> int:
    """How many CPU threads a run uses; 0 leaves PyTorch's default.

    ``REASONING_LAB_THREADS`` wins when it is set (the Makefile sets it to 1 for the book build and the
    tests: these models are too small to share cores, and the machine may be busy); otherwise the
    experiment's ``threads`` parameter, where it has one and it is nonzero."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"environment variable {THREADS_ENV}={env!r} is not allowed: expected a "
                             "positive integer")
        return int(env)
    return int(params.get("threads") or 0)


def start(name: str, namespace: dict[str, Any]) -> Run:
    """Validate the notebook's parameters, seed, set the CPU threads (:func:`thread_count`) and the plot
    style. Where the experiment has a ``threads`` parameter, ``run.p.threads`` is the count in effect."""
    exp = experiments.get(name)
    values = {k: namespace[k] for k in exp.defaults() if k in namespace}
    params = exp.resolve("default", values)
    threads = thread_count(params)
    if threads:
        torch.set_num_threads(threads)
        if "threads" in params:
            params["threads"] = threads
    seed_everything(params["seed"])
    use_book_style()
    return Run(name, params)
