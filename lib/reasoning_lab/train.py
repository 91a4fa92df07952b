"""The training loop of every study: :func:`fit`, its one configuration type :class:`LoopConfig`, the
per-seed :class:`History` it records, and :class:`Trained`, what a study's run returns.

:func:`fit` takes a model (one model, or a stack of seeds from :mod:`.stacked`), a *batch source*
(what to train on at each step) and an *objective* (the loss of a batch), and owns everything else:
the step counter, the learning-rate schedule, the optimizer (AdamW or Adam, fused on CPU and CUDA),
bf16 autocast and ``torch.compile``, gradient clipping (per seed for a stack), the evaluation
schedule, one :class:`History` per seed, hooks, interrupts, and atomic checkpoints that hold the
weights, the optimizer, the batch source's random state, PyTorch's global random state, the histories
and any other state the caller registers (``state=``, e.g. frames recorded during training), so that
a run started again with the same checkpoint ends exactly where an uninterrupted run ends.

A batch source is any object with ``batch(step)`` (the batch of step ``step``, drawn in step order),
``state_dict()`` and ``load_state_dict(state)``. An objective is a callable ``objective(forward,
batch) -> (loss, n)``: ``loss`` is a scalar, or ``[S]`` (one loss per seed) for a stacked model, and
``n`` the number of examples it averages (the weight of the step in the mean training loss); it may
also return a third item, a dict of per-step values to record. Each study plugs in its own: epochs
over fixed sentences (:mod:`.epochs`), masked-token training, fresh question batches for the capacity
study, fresh graph batches for the shortest-path models.

Checkpoints hold tensors and plain data only and are read with ``weights_only=True``: a file planted in
a run's folder cannot run code. SIGINT and SIGTERM during :func:`fit` end the current step, write the
checkpoint and raise :class:`KeyboardInterrupt`; the same call again resumes.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .io import progress, torch_save
from .stacked import Stacked


@dataclass
class LoopConfig:
    """What :func:`fit` needs besides the model, the batches and the objective. Steps count from 0."""

    steps: int
    lr: float | None = 1e-3          # None: keep the learning rates of the optimizer given to fit
    optimizer: str = "adamw"         # "adamw" | "adam"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    fused: bool | None = None        # None = fused on CPU and CUDA
    schedule: str | Callable[[int], float] = "constant"   # "constant" | "warmup" | "cosine" | "step" |
                                     # a function step -> learning rate
    warmup_steps: int = 0            # linear warm-up ("warmup", "cosine", "step")
    final_lr: float = 0.1            # "cosine": the floor, as a fraction of lr
    switch_step: int = 0             # "step": lr until this step, then lr_after_switch
    lr_after_switch: float = 0.0
    grad_clip: float | None = None   # global norm; per seed for a stacked model
    eval_every: int = 0              # steps between evaluations; 0 = only at the end
    period: int = 1                  # steps over which the logged train_loss is averaged (an epoch)
    checkpoint_path: str | Path | None = None
    checkpoint_every: int = 0        # steps; 0 = only at the end (when a path is given)
    device: str | torch.device = "cpu"
    bf16: bool = True                # autocast to bfloat16 on CUDA
    bf16_cpu: bool = False           # ... and on the CPU (tests of the bf16 path)
    compile: bool | str = False      # torch.compile on CUDA (a string is the mode, e.g. "reduce-overhead")
    compile_cpu: bool = False        # ... and off CUDA (inductor on the CPU: tests of that path)
    static_shapes: bool = False      # compile for fixed shapes (dynamic=False)
    progress: bool | None = None     # None = automatic (bar when interactive, silent in builds)
    desc: str | None = None

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"parameter steps={self.steps} is not allowed: expected 0 or more")
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(f"parameter optimizer={self.optimizer!r} is not allowed: expected 'adamw' or 'adam'")
        if not callable(self.schedule) and self.schedule not in ("constant", "warmup", "cosine", "step"):
            raise ValueError(f"parameter schedule={self.schedule!r} is not allowed: expected 'constant', "
                             "'warmup', 'cosine', 'step' or a function of the step")
        if self.period < 1:
            raise ValueError(f"parameter period={self.period} is not allowed: expected 1 or more")


def learning_rate(cfg: LoopConfig, step: int) -> float:
    """The learning rate of step ``step`` (0-based) under ``cfg.schedule``."""
    if callable(cfg.schedule):
        return cfg.schedule(step)
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "warmup":
        return cfg.lr * warm
    if cfg.schedule == "step":
        return (cfg.lr if step < cfg.switch_step else cfg.lr_after_switch) * warm
    w = max(1, cfg.warmup_steps)      # cosine: linear warm-up, then half a cosine down to final_lr * lr
    if step < w:
        return cfg.lr * (step + 1) / w
    t = (step - w) / max(1, cfg.steps - w)
    return cfg.lr * (cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * t)))


EVALUATIONS_PER_RUN = 30     # the default: enough points for a training curve, a small share of the time


def default_eval_every(epochs: int) -> int:
    """Epochs between evaluations by default: about :data:`EVALUATIONS_PER_RUN` per run."""
    return max(1, epochs // EVALUATIONS_PER_RUN)


class History:
    """Metric lists of one run, keyed like ``valid_nll`` / ``train_prob_first``; the x axis is a list too
    (``epoch`` or ``step``). ``final`` holds the values of the last evaluation, ``seconds`` the training
    time, ``start_step`` the step this call of :func:`fit` started from (above 0 when it resumed from a
    checkpoint) and ``finished_before`` whether that checkpoint was already finished. Keys with a slash read as
    groups: ``h.by_label["1"]`` is ``h["by_label/1"]``; any key is also an attribute (``h.loss``)."""

    def __init__(self, data: dict[str, list[float]] | None = None, final: dict[str, float] | None = None,
                 seconds: float = 0.0):
        self.data = {k: list(v) for k, v in (data or {}).items()}
        self.final = dict(final or {})
        self.seconds = float(seconds)
        self.start_step = 0              # set by fit: where this call started
        self.finished_before = False     # set by fit: the checkpoint it loaded was finished

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.data.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("data", "final", "seconds", "start_step", "finished_before"):
            raise AttributeError(name)
        if name in self.data:
            return self.data[name]
        group = {k[len(name) + 1:]: v for k, v in self.data.items() if k.startswith(name + "/")}
        if group:
            return group
        raise AttributeError(f"History has no metric {name!r}")

    def last(self, key: str) -> float:
        return self.data[key][-1]

    def keys(self):
        return self.data.keys()

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data, "final": self.final, "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "History":
        return cls(state["data"], state["final"], state["seconds"])


@dataclass
class Trained:
    """What a study's run returns (``Experiment.train``): the trained models and their histories, the
    metrics the run determines (every metric the experiment declares that does not need the chapter's
    figures), the data they were trained on, frames recorded during training (first seed or model,
    ``(x, payload)``), tables the run writes as CSV (``name.csv -> rows``) and anything else a chapter
    needs (``extra``)."""

    models: list
    histories: list[History]
    metrics: dict[str, Any]
    data: Any = None
    frames: list = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self):
        return self.models[0]

    @property
    def history(self) -> History:
        return self.histories[0]

    def mean_last(self, *keys: str) -> dict[str, float]:
        """``{key: mean over the histories of the key's last recorded value}``."""
        return {k: float(sum(h.last(k) for h in self.histories) / len(self.histories)) for k in keys}

    def resumed(self) -> str | None:
        """How this call trained, in words, when it did not start from scratch (None when it did)."""
        if self.histories and all(h.finished_before for h in self.histories):
            return "trained earlier: loaded the finished checkpoint, no training"
        starts = [h.start_step for h in self.histories if h.start_step]
        return f"resumed from a checkpoint at step {min(starts):,}" if starts else None


def make_optimizer(params: Sequence[torch.Tensor], cfg: LoopConfig, device: torch.device) -> torch.optim.Optimizer:
    """The one optimizer policy: AdamW (or Adam), fused on CPU and CUDA unless ``cfg.fused`` says otherwise."""
    fused = device.type in ("cpu", "cuda") if cfg.fused is None else cfg.fused
    extra = {"fused": True} if fused else {}
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(list(params), lr=cfg.lr if cfg.lr is not None else 1e-3, betas=tuple(cfg.betas),
               weight_decay=cfg.weight_decay, **extra)


def compile_mode(cfg: LoopConfig, device: torch.device) -> str | None:
    """The ``torch.compile`` mode to train with, or None for eager (eager off CUDA unless ``compile_cpu``)."""
    if not cfg.compile or (device.type != "cuda" and not cfg.compile_cpu):
        return None
    return "default" if cfg.compile is True else str(cfg.compile)


def autocast_context(cfg: LoopConfig, device: torch.device):
    """bf16 autocast on CUDA (``cfg.bf16``), on the CPU only with ``cfg.bf16_cpu``; else no autocast."""
    if device.type == "cuda" and cfg.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cfg.bf16_cpu:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def mark_cudagraph_step(mode: str | None) -> None:
    """Tell CUDA-graph trees a new training step starts (outputs of the previous replay may be reused)."""
    if mode in ("reduce-overhead", "max-autotune") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        torch.compiler.cudagraph_mark_step_begin()


def clip_per_seed(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for each seed separately (grads [S, ...]); returns the per-seed norms [S]."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads])   # [P, S]
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
    return total


def _dist():
    """``(torch.distributed, rank, world size)`` under an initialised process group, else ``(None, 0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


CHECKPOINT_FORMAT = "reasoning-lab-fit-2"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or was written for something else (one line: file, what to do)."""


def load_checkpoint(path: Path, device) -> dict:
    """A checkpoint written by :func:`fit`, read with ``weights_only=True`` (tensors and plain data only).
    A truncated, corrupt or foreign file raises :class:`CheckpointError` naming it."""
    what_to_do = "delete it to train from the start, or give the run another output folder"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:           # truncated (EOFError), not a zip, not ours (UnpicklingError), ...
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {reason}); "
                              f"{what_to_do}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} checkpoint (found {found!r}); "
                              f"{what_to_do}")
    return state


class _Interrupts:
    """SIGINT and SIGTERM while training: the first one is noted and ends the run at the end of the current
    step (checkpoint written); a second one raises at once. Only in the main thread (elsewhere signals
    cannot be caught, and the run is not interruptible this way)."""

    def __init__(self):
        self.signal: int | None = None
        self.old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._note)
        return self

    def _note(self, signum, _frame):
        if self.signal is not None:
            raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name} (twice)")
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        return False


def fit(model: nn.Module, batches, objective: Callable, cfg: LoopConfig,
        evaluate: Callable[[int], dict | list[dict]] | None = None,
        hooks: Sequence[Callable[[int, list[History]], None]] = (),
        optimizer: torch.optim.Optimizer | None = None,
        histories: Sequence[History] | None = None,
        state: dict[str, Any] | None = None) -> list[History]:
    """Train ``model`` in place for ``cfg.steps`` steps; return one :class:`History` per seed (one for a
    plain model).

    At each step ``s``: the learning rate of step ``s`` is set, ``batches.batch(s)`` is drawn, the
    objective's loss is backpropagated (summed over seeds), the gradient clipped, the optimizer stepped.
    After step ``s`` (``done = s + 1`` steps) the loop evaluates when ``done`` is a multiple of
    ``cfg.eval_every`` or the last step: ``evaluate(done)`` returns the metrics to record (a dict, or one
    per seed), recorded with ``train_loss``, the weighted mean loss of the current period (over every
    rank under DDP). Then every hook runs as ``hook(done, histories)`` (a hook may raise to stop
    training), then the checkpoint is written every ``cfg.checkpoint_every`` steps and at the end. With
    an existing checkpoint at ``cfg.checkpoint_path`` the run continues from it. ``optimizer``: one built
    by the caller (its learning rates are still set by the schedule); default :func:`make_optimizer`.
    ``histories``: ones to continue (e.g. a second phase of training). ``state``: objects with
    ``state_dict()``/``load_state_dict()`` saved in the checkpoint with the rest (name -> object).

    SIGINT or SIGTERM ends training at the end of the current step: the checkpoint (if any) is written
    and :class:`KeyboardInterrupt` is raised.
    """
    device = torch.device(cfg.device)
    dist, rank, _world = _dist()
    stacked = isinstance(model, Stacked)
    n_seeds = model.n_seeds if stacked else 1
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = make_optimizer(trainable, cfg, device)
    histories = list(histories) if histories is not None else [History() for _ in range(n_seeds)]
    if len(histories) != n_seeds:
        raise ValueError(f"got {len(histories)} histories for {n_seeds} seeds: expected one per seed")
    state = dict(state or {})
    total = torch.zeros(n_seeds, device=device)
    count = 0
    start = 0

    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        saved = load_checkpoint(ckpt, device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        batches.load_state_dict(saved["batches"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), device)
        for h, kept in zip(histories, saved["histories"]):
            h.data, h.final, h.seconds = kept["data"], kept["final"], kept["seconds"]
        for name, obj in state.items():
            if name in saved.get("state", {}):
                obj.load_state_dict(saved["state"][name])
        total.copy_(saved["period_total"].to(device))
        count = saved["period_count"]
        start = saved["step"]
    for h in histories:
        h.start_step = start
        h.finished_before = start >= cfg.steps and start > 0
    seconds0 = [h.seconds for h in histories]

    def save(step: int) -> None:
        if ckpt is None:
            return
        batch_state = batches.state_dict()       # collective under DDP: every rank takes part
        if rank == 0:
            torch_save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "batches": batch_state,
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "histories": [h.state_dict() for h in histories], "step": step,
                        "state": {k: v.state_dict() for k, v in state.items()},
                        "period_total": total.detach().cpu(), "period_count": count}, ckpt)
        if dist is not None:
            dist.barrier()

    mode = compile_mode(cfg, device)
    forward = model
    if mode is not None:
        forward = torch.compile(model, mode=mode, dynamic=False if cfg.static_shapes else None)
    autocast = autocast_context(cfg, device)
    t0 = time.perf_counter()

    def elapsed() -> None:
        for h, s0 in zip(histories, seconds0):
            h.seconds = s0 + time.perf_counter() - t0

    def stop_requested(flag: int | None) -> bool:
        if dist is None:
            return flag is not None
        mine = torch.tensor([0 if flag is None else 1], device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)       # every rank stops at the same step
        return bool(mine.item())

    model.train()
    with _Interrupts() as interrupts:
        for step in progress(range(start, cfg.steps), total=cfg.steps, initial=start, desc=cfg.desc,
                             enabled=cfg.progress):
            if step % cfg.period == 0:
                total.zero_()
                count = 0
            if cfg.lr is not None or callable(cfg.schedule):
                lr = learning_rate(cfg, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            batch = batches.batch(step)
            mark_cudagraph_step(mode)
            with autocast:
                out = objective(forward, batch)
            loss, n = out[0], out[1]
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            if cfg.grad_clip:
                if stacked:
                    clip_per_seed(trainable, cfg.grad_clip)
                else:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            total += loss.detach().float().reshape(-1) * n
            count += n
            done = step + 1
            if len(out) > 2 and out[2]:
                histories[0].add(**out[2])
            if evaluate is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
                elapsed()
                metrics = evaluate(done)
                metrics = metrics if isinstance(metrics, list) else [metrics]
                logged = total / max(count, 1)
                if dist is not None:                 # the loss of the whole batch, all ranks together
                    dist.all_reduce(logged)
                    logged /= dist.get_world_size()
                for h, loss_mean, m in zip(histories, logged.tolist(), metrics):
                    m = dict(m)
                    x = {k: m.pop(k) for k in ("epoch", "step") if k in m}
                    h.add(**x, train_loss=loss_mean, **m)
                    h.final = {k: v for k, v in m.items() if not isinstance(v, (list, tuple))}
                model.train()
            for hook in hooks:
                hook(done, histories)
            if stop_requested(interrupts.signal) and done < cfg.steps:
                elapsed()
                save(done)
                where = f"; checkpoint {ckpt}" if ckpt is not None else ""
                raise KeyboardInterrupt(f"training interrupted after step {done:,} of {cfg.steps:,}{where}")
            if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                elapsed()
                save(done)
    elapsed()
    if start < cfg.steps or (ckpt is not None and not ckpt.exists()):
        save(cfg.steps)
    model.eval()
    return histories


def no_checkpoints(_name: str) -> None:
    """The checkpoint policy of a run without an output folder: none."""
    return None
