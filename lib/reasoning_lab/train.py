"""The training loop of every study, and the answer cross-entropy trainers built on it.

:func:`fit` is the one loop: it takes a model (one model, or a stack of seeds from :mod:`.stacked`), a
*batch source* (what to train on at each step) and an *objective* (the loss of a batch), and owns
everything else: the step counter, the learning-rate schedule, the optimizer (AdamW or Adam, fused on
CPU and CUDA), bf16 autocast and ``torch.compile``, gradient clipping (per seed for a stack), the
evaluation schedule, one :class:`History` per seed, hooks, and atomic checkpoints that hold the
weights, the optimizer, the batch source's random state, PyTorch's global random state and the
history, so that a run started again with the same checkpoint ends exactly where an uninterrupted run
ends. The studies plug in their own batch sources and objectives: answer cross-entropy over epochs of
a fixed :class:`SeqData` (:func:`train`, :func:`train_seeds`), masked-token training, fresh question
batches for the capacity study, fresh graph batches for the shortest-path models.

A batch source is any object with ``batch(step)`` (the batch of step ``step``, drawn in step order),
``state_dict()`` and ``load_state_dict(state)``. An objective is a callable ``objective(forward,
batch) -> (loss, n)``: ``loss`` is a scalar, or ``[S]`` (one loss per seed) for a stacked model, and
``n`` the number of examples it averages (the weight of the step in the mean training loss); it may
also return a third item, a dict of per-step values to record.

For the SeqData trainers, data are equal-length token rows plus a boolean mask of the *answer* tokens.
The loss is taken on the answer tokens, or on every next-token prediction with
``loss_whole_sequence=True``. Only the scored positions go through the output layer
(:func:`loss_positions`, ``Transformer(index=)``). With a CUDA-graph compile mode (``"reduce-overhead"``)
every batch has the same shape: the last, partial batch is padded with rows of weight zero, which
changes neither the loss nor the gradient (``static_batches``).
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import SeqData, loss_positions
from .evaluate import evaluate, logits_at
from .io import progress, torch_save
from .stacked import Stacked, _rows, build_models, make_ensemble, stack_positions


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    loss_whole_sequence: bool = False
    grad_clip: float | None = None
    warmup_steps: int = 0
    eval_every: int = 1              # epochs between evaluations (the last epoch is always evaluated)
    seed: int = 0
    device: str | torch.device = "cpu"
    bf16: bool = True                # autocast to bfloat16 on CUDA (on CPU only with bf16_cpu)
    bf16_cpu: bool = False           # autocast to bfloat16 on the CPU too (tests of the bf16 path)
    compile: bool | str = False      # torch.compile on CUDA (on CPU only with compile_cpu); a string is the
                                     # mode, e.g. "reduce-overhead" (CUDA graphs) or "max-autotune-no-cudagraphs"
    compile_cpu: bool = False        # allow torch.compile off CUDA (inductor on the CPU: tests of that path)
    static_batches: bool | None = None  # pad the last batch to batch_size with zero-weight rows;
                                        # None = only when compiling on CUDA (fixed shapes, no recompiles)
    fused: bool | None = None        # fused AdamW kernel (one pass over all tensors); None = on CPU and CUDA
    checkpoint_path: str | Path | None = None
    checkpoint_every: int = 0        # epochs; 0 = only at the end (when a path is given)
    progress: bool | None = None     # None = automatic (bar when interactive, silent in builds)
    desc: str | None = None


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
    bf16_cpu: bool = False           # ... and on the CPU
    compile: bool | str = False      # torch.compile on CUDA (a string is the mode)
    compile_cpu: bool = False        # ... and off CUDA
    static_shapes: bool = False      # compile for fixed shapes (dynamic=False)
    progress: bool | None = None
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


class History:
    """Metric lists of one run, keyed like ``valid_nll`` / ``train_prob_first``; the x axis is a list too
    (``epoch`` or ``step``). ``final`` holds the values of the last evaluation, ``seconds`` the training
    time. Keys with a slash read as groups: ``h.by_label["1"]`` is ``h["by_label/1"]``; any key is also
    an attribute (``h.loss``)."""

    def __init__(self, data: dict[str, list[float]] | None = None, final: dict[str, float] | None = None,
                 seconds: float = 0.0):
        self.data = {k: list(v) for k, v in (data or {}).items()}
        self.final = dict(final or {})
        self.seconds = float(seconds)

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.data.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("data", "final", "seconds"):
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


def make_optimizer(params: Sequence[torch.Tensor], cfg, device: torch.device,
                   kind: str = "adamw") -> torch.optim.Optimizer:
    """The one optimizer policy: AdamW (or Adam), fused on CPU and CUDA unless ``cfg.fused`` says otherwise."""
    fused = device.type in ("cpu", "cuda") if getattr(cfg, "fused", None) is None else cfg.fused
    extra = {"fused": True} if fused else {}
    opt = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return opt(list(params), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **extra)


def compile_mode(cfg, device: torch.device) -> str | None:
    """The ``torch.compile`` mode to train with, or None for eager (eager off CUDA unless ``compile_cpu``)."""
    if not cfg.compile or (device.type != "cuda" and not getattr(cfg, "compile_cpu", False)):
        return None
    return "default" if cfg.compile is True else str(cfg.compile)


def autocast_context(cfg, device: torch.device):
    """bf16 autocast on CUDA (``cfg.bf16``), on the CPU only with ``cfg.bf16_cpu``; else no autocast."""
    if device.type == "cuda" and cfg.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and getattr(cfg, "bf16_cpu", False):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_static_batches(cfg: TrainConfig, device: torch.device) -> bool:
    return compile_mode(cfg, device) is not None if cfg.static_batches is None else bool(cfg.static_batches)


def batch_rows(order: torch.Tensor, b: int, batch_size: int, static: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row indices of batch ``b`` of a shuffled epoch (``order`` [..., N], batches along the last axis)
    and, for a padded (static-shape) last batch, a [batch_size] bool marking the real rows (None when
    every row is real). Padding repeats rows of the epoch; they get weight zero in the loss."""
    idx = order[..., b * batch_size:(b + 1) * batch_size]
    n = idx.shape[-1]
    if not static or n == batch_size:
        return idx, None
    pad = order[..., torch.arange(batch_size - n, device=order.device) % order.shape[-1]]
    real = torch.arange(batch_size, device=order.device) < n
    return torch.cat([idx, pad], -1), real


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


CHECKPOINT_FORMAT = "reasoning-lab-fit-1"


def fit(model: nn.Module, batches, objective: Callable, cfg: LoopConfig,
        evaluate: Callable[[int], dict | list[dict]] | None = None,
        hooks: Sequence[Callable[[int, list[History]], None]] = (),
        optimizer: torch.optim.Optimizer | None = None,
        histories: Sequence[History] | None = None) -> list[History]:
    """Train ``model`` in place for ``cfg.steps`` steps; return one :class:`History` per seed (one for a
    plain model).

    At each step ``s``: the learning rate of step ``s`` is set, ``batches.batch(s)`` is drawn, the
    objective's loss is backpropagated (summed over seeds), the gradient clipped, the optimizer stepped.
    After step ``s`` (``done = s + 1`` steps) the loop evaluates when ``done`` is a multiple of
    ``cfg.eval_every`` or the last step: ``evaluate(done)`` returns the metrics to record (a dict, or one
    per seed), recorded with ``train_loss``, the weighted mean loss of the current period. Then every
    hook runs as ``hook(done, histories)`` (a hook may raise to stop training), then the checkpoint is
    written every ``cfg.checkpoint_every`` steps and at the end. With an existing checkpoint at
    ``cfg.checkpoint_path`` the run continues from it. ``optimizer``: one built by the caller (its
    learning rates are still set by the schedule); default :func:`make_optimizer`. ``histories``: ones
    to continue (e.g. a second phase of training).
    """
    device = torch.device(cfg.device)
    dist, rank, _world = _dist()
    stacked = isinstance(model, Stacked)
    n_seeds = model.n_seeds if stacked else 1
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = make_optimizer(trainable, cfg, device, cfg.optimizer)
    histories = list(histories) if histories is not None else [History() for _ in range(n_seeds)]
    if len(histories) != n_seeds:
        raise ValueError(f"got {len(histories)} histories for {n_seeds} seeds: expected one per seed")
    start = 0

    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    state = torch.load(ckpt, map_location=device, weights_only=False) if ckpt is not None and ckpt.exists() else None
    if state is not None and state.get("format") != CHECKPOINT_FORMAT:
        warnings.warn(f"checkpoint {ckpt} is not a {CHECKPOINT_FORMAT} checkpoint (written by an older "
                      "trainer): training starts afresh and replaces it")
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["batches"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        for h, saved in zip(histories, state["histories"]):
            h.data, h.final, h.seconds = saved["data"], saved["final"], saved["seconds"]
        start = state["step"]
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
                        "histories": [h.state_dict() for h in histories], "step": step}, ckpt)
        if dist is not None:
            dist.barrier()

    mode = compile_mode(cfg, device)
    forward = model
    if mode is not None:
        forward = torch.compile(model, mode=mode, dynamic=False if cfg.static_shapes else None)
    autocast = autocast_context(cfg, device)
    total = torch.zeros(n_seeds, device=device)
    count = 0
    t0 = time.perf_counter()

    def elapsed() -> None:
        for h, s0 in zip(histories, seconds0):
            h.seconds = s0 + time.perf_counter() - t0

    model.train()
    for step in progress(range(start, cfg.steps), total=cfg.steps, desc=cfg.desc, enabled=cfg.progress):
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
            for h, loss_mean, m in zip(histories, (total / max(count, 1)).tolist(), metrics):
                m = dict(m)
                x = {k: m.pop(k) for k in ("epoch", "step") if k in m}
                h.add(**x, train_loss=loss_mean, **m)
                h.final = {k: v for k, v in m.items() if not isinstance(v, (list, tuple))}
            model.train()
        for hook in hooks:
            hook(done, histories)
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            elapsed()
            save(done)
    elapsed()
    save(cfg.steps)
    model.eval()
    return histories


# ---------------------------------------------------------------------------------------------------
# Epochs over a fixed SeqData: batch sources and the answer cross-entropy


class EpochBatches:
    """Shuffled epochs over ``n`` rows, one generator per seed (``seeds``): ``batch(step)`` gives the row
    indices ``[B]`` (``[S, B]`` for several seeds), the real-row mask of a padded batch (or None) and the
    number of real rows. A new permutation is drawn at the first step of each epoch."""

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int], static: bool = False, device="cpu",
                 stacked: bool = False):
        self.n, self.batch_size, self.static, self.device, self.stacked = n, batch_size, static, device, stacked
        self.steps_per_epoch = math.ceil(n / batch_size)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.order = None

    def batch(self, step: int):
        b = step % self.steps_per_epoch
        if b == 0 or self.order is None:
            orders = [torch.randperm(self.n, generator=g) for g in self.generators]
            self.order = (torch.stack(orders) if self.stacked else orders[0]).to(self.device)
        idx, real = batch_rows(self.order, b, self.batch_size, self.static)
        return idx, real, min(self.batch_size, self.n - b * self.batch_size)   # real rows, counted on the host

    def state_dict(self) -> dict:
        return {"generators": [g.get_state() for g in self.generators],
                "order": None if self.order is None else self.order.cpu()}

    def load_state_dict(self, state: dict) -> None:
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s.cpu())
        self.order = None if state["order"] is None else state["order"].to(self.device)


class AnswerCrossEntropy:
    """Cross-entropy of the answer tokens (or of every token) of fixed data, for one model or a stack.

    ``datasets``: one SeqData, or one per seed (same shape) for a stacked model. The batch is what
    :class:`EpochBatches` gives. Seed ``s``'s loss is the mean over its scored tokens; a stack returns
    the ``[S]`` losses (their sum is backpropagated: each seed gets its own gradient)."""

    def __init__(self, model: nn.Module, datasets: SeqData | Sequence[SeqData], whole_sequence: bool,
                 device: torch.device):
        self.model = model
        self.stacked = isinstance(model, Stacked)
        if self.stacked:
            self.tokens = torch.stack([d.tokens for d in datasets]).to(device)                    # [S, N, T]
            index, weight = stack_positions([d.to(device).loss_mask(whole_sequence) for d in datasets])
            self.targets = self.tokens[..., 1:].gather(2, index)
            full = index.shape[-1] == self.tokens.shape[-1] - 1
        else:
            data = datasets.to(device)
            self.tokens = data.tokens
            index, weight = loss_positions(data.loss_mask(whole_sequence))
            self.targets = self.tokens[:, 1:].gather(1, index)
            full = index.shape[1] == self.tokens.shape[1] - 1
        self.weight = weight
        self.index = None if full and bool(weight.all()) else index   # every position scored: full logits

    def __call__(self, forward, batch):
        idx, real, n = batch
        if not self.stacked:
            w = self.weight[idx] if real is None else self.weight[idx] & real[:, None]
            index = None if self.index is None else self.index[idx]
            logits = logits_at(self.model, self.tokens[idx, :-1], index, forward)
            return weighted_loss(logits, self.targets[idx], w), n
        S = self.tokens.shape[0]
        w = _rows(self.weight, idx)
        if real is not None:
            w = w & real.view(1, -1, 1)
        logits = forward(_rows(self.tokens, idx)[..., :-1], None if self.index is None else _rows(self.index, idx))
        ce = F.cross_entropy(logits.float().flatten(0, 2), _rows(self.targets, idx).flatten(),
                             reduction="none").view(S, -1)
        wf = w.reshape(S, -1).to(ce.dtype)
        return (ce * wf).sum(1) / wf.sum(1).clamp_min(1.0), n


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the entries with nonzero ``weight`` (logits [B, K, V], targets/weight [B, K])."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    w = weight.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1.0)


def epoch_loop_config(cfg: TrainConfig, steps_per_epoch: int, static: bool = False) -> LoopConfig:
    """The :class:`LoopConfig` of an epoch-based :class:`TrainConfig` (epochs become steps)."""
    return LoopConfig(
        steps=cfg.epochs * steps_per_epoch, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
        fused=cfg.fused, schedule="warmup" if cfg.warmup_steps else "constant", warmup_steps=cfg.warmup_steps,
        grad_clip=cfg.grad_clip, eval_every=cfg.eval_every * steps_per_epoch, period=steps_per_epoch,
        checkpoint_path=cfg.checkpoint_path, checkpoint_every=cfg.checkpoint_every * steps_per_epoch,
        device=cfg.device, bf16=cfg.bf16, bf16_cpu=cfg.bf16_cpu, compile=cfg.compile,
        compile_cpu=cfg.compile_cpu, static_shapes=static, progress=cfg.progress, desc=cfg.desc)


def epoch_hook(on_epoch_end: Callable | None, steps_per_epoch: int, single: bool):
    """A :func:`fit` hook calling ``on_epoch_end(epoch, history)`` at the end of every epoch."""
    if on_epoch_end is None:
        return []

    def hook(done: int, histories: list[History]) -> None:
        if done % steps_per_epoch == 0:
            on_epoch_end(done // steps_per_epoch, histories[0] if single else histories)
    return [hook]


def train(model: torch.nn.Module, train_data: SeqData, cfg: TrainConfig,
          eval_splits: dict[str, SeqData] | None = None,
          on_epoch_end: Callable[[int, History], None] | None = None) -> History:
    """Train ``model`` in place with the answer cross-entropy and return its history.

    ``eval_splits`` maps names (e.g. ``"train"``, ``"valid"``) to data evaluated every ``eval_every``
    epochs. With a ``checkpoint_path`` the state is saved atomically every ``checkpoint_every`` epochs
    and at the end; calling ``train`` again with the same path resumes and ends with the same metrics.
    """
    device = torch.device(cfg.device)
    model.to(device)
    eval_splits = {"train": train_data} if eval_splits is None else eval_splits
    static = uses_static_batches(cfg, device)
    batches = EpochBatches(len(train_data), cfg.batch_size, [cfg.seed], static, device)
    spe = batches.steps_per_epoch
    objective = AnswerCrossEntropy(model, train_data, cfg.loss_whole_sequence, device)
    return fit(model, batches, objective, epoch_loop_config(cfg, spe, static),
               evaluate=lambda done: {"epoch": done // spe, **evaluate(model, eval_splits)},
               hooks=epoch_hook(on_epoch_end, spe, single=True))[0]


EVALUATIONS_PER_RUN = 30     # the default: enough points for a training curve, a small share of the time


def default_eval_every(epochs: int) -> int:
    """Epochs between evaluations by default: about :data:`EVALUATIONS_PER_RUN` per run."""
    return max(1, epochs // EVALUATIONS_PER_RUN)


def config_from_params(p, seed: int, device, checkpoint=None, eval_every: int | None = None,
                       **extra) -> TrainConfig:
    """TrainConfig from a notebook's validated parameters (names as in the parameters cell). Evaluations:
    every ``eval_every`` epochs (the argument, else an ``eval_every`` entry of ``p``, else
    :func:`default_eval_every`); the last epoch is always evaluated."""
    get = (lambda k, d=None: p.get(k, d)) if isinstance(p, dict) else (lambda k, d=None: getattr(p, k, d))
    epochs = get("epochs")
    return TrainConfig(
        epochs=epochs, batch_size=get("batch_size"), lr=get("lr"), weight_decay=get("weight_decay", 0.0),
        betas=tuple(get("betas", (0.9, 0.999))), loss_whole_sequence=get("loss_whole_sequence", False),
        eval_every=eval_every or get("eval_every") or default_eval_every(epochs), seed=seed, device=device,
        compile=get("compile", False), checkpoint_path=checkpoint,
        checkpoint_every=max(1, epochs // 10) if checkpoint else 0, **extra)


def train_seeds(make_model: Callable[[int], nn.Module] | Sequence[nn.Module], datasets: Sequence[SeqData],
                cfg: TrainConfig, eval_splits: Sequence[dict[str, SeqData]] | None = None,
                seeds: Sequence[int] | None = None,
                on_epoch_end: Callable[[int, list[History]], None] | None = None,
                backend: str = "auto", sync_every: int = 0) -> list[History]:
    """Train one model per seed, all in one batched model (:mod:`.stacked`) fed to :func:`fit`; return one
    History per seed.

    ``make_model(seed)`` builds a model (called right after ``seed_everything(seed)``), or pass the built
    models (they are trained in place). ``datasets[s]`` is seed ``s``'s training data (same size for
    all seeds), ``eval_splits[s]`` its evaluation splits (default: ``{"train": datasets[s]}``), and
    ``seeds[s]`` seeds its data shuffling (``cfg.seed`` is not used). Everything else in ``cfg`` means
    what it means for :func:`train`, checkpoints included: with ``checkpoint_path`` one file holds the
    whole stack and a second call resumes from it.

    The models receive the trained weights at the end. With ``sync_every = k > 0`` they also receive the
    current weights after every ``k``-th epoch, before ``on_epoch_end`` is called (for hooks that look at
    a model during training, e.g. to record snapshots); they are moved to ``cfg.device`` first.
    """
    from .evaluate import evaluate_seeds

    if seeds is None:
        raise ValueError("train_seeds needs the list of seeds")
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(datasets) or not seeds:
        raise ValueError(f"got {len(datasets)} datasets for {len(seeds)} seeds: expected one per seed")
    if any(d.tokens.shape != datasets[0].tokens.shape for d in datasets):
        raise ValueError("every seed's training data must have the same shape")
    eval_splits = [{"train": d} for d in datasets] if eval_splits is None else list(eval_splits)
    if len(eval_splits) != len(seeds):
        raise ValueError(f"got {len(eval_splits)} eval_splits for {len(seeds)} seeds: expected one per seed")
    if sync_every < 0:
        raise ValueError(f"parameter sync_every={sync_every} is not allowed: expected 0 (never) or a positive "
                         "number of epochs")
    if backend not in ("auto", "stacked", "vmap"):
        raise ValueError(f"parameter backend={backend!r} is not allowed: expected 'auto', 'stacked' or 'vmap'")
    models = list(make_model) if isinstance(make_model, (list, tuple)) else build_models(make_model, seeds)
    if len(models) != len(seeds):
        raise ValueError(f"got {len(models)} models for {len(seeds)} seeds: expected one per seed")

    device = torch.device(cfg.device)
    ens = make_ensemble(models, backend).to(device)
    if sync_every:
        for m in models:
            m.to(device)
    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = state.get("batches", {}).get("seeds")
        if state.get("format") == CHECKPOINT_FORMAT and saved != seeds:
            raise ValueError(f"checkpoint {ckpt} holds seeds {saved}, not {seeds}")
    static = uses_static_batches(cfg, device)
    batches = _SeedBatches(len(datasets[0]), cfg.batch_size, seeds, static, device, stacked=True)
    spe = batches.steps_per_epoch
    loop = epoch_loop_config(cfg, spe, static)
    hooks = []
    if sync_every:
        hooks.append(lambda done, _h: ens.write_back(models)
                     if done % spe == 0 and (done // spe % sync_every == 0 or done // spe == cfg.epochs) else None)
    hooks += epoch_hook(on_epoch_end, spe, single=False)

    def evaluate_all(done: int) -> list[dict]:
        return [{"epoch": done // spe, **m} for m in evaluate_seeds(ens, eval_splits)]

    histories = fit(ens, batches, AnswerCrossEntropy(ens, datasets, cfg.loss_whole_sequence, device), loop,
                    evaluate=evaluate_all, hooks=hooks)
    for m in models:
        m.to(device).eval()
    ens.write_back(models)
    return histories


class _SeedBatches(EpochBatches):
    """:class:`EpochBatches` whose checkpointed state also names its seeds (checked on resume)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.seeds = [int(s) for s in args[2]]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seeds": self.seeds}
