"""The one training loop: next-token cross-entropy on a target mask, AdamW, per-epoch history,
deterministic on CPU for a seed, bf16 autocast / ``torch.compile`` on CUDA, atomic checkpoints, resume.

Data is a :class:`SeqData`: equal-length token rows plus a boolean mask of the *answer* tokens (the
entity the model is asked for). The loss is taken on the answer tokens, or on every next-token
prediction with ``loss_whole_sequence=True``. Evaluation reports, per split, the log-probability of the
whole answer entity (sum over its tokens) and of its first token.

Only the scored positions go through the output layer (:func:`loss_positions`, ``Transformer(index=)``):
with one answer token per sentence that is most of the output-layer work saved. On CUDA the step can be
compiled (``compile=True`` or a ``torch.compile`` mode); with a CUDA-graph mode (``"reduce-overhead"``)
every batch has the same shape: the last, partial batch is padded with rows of weight zero, which changes
neither the loss nor the gradient (``static_batches``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import SeqData, loss_positions
from .evaluate import evaluate, evaluate_seeds, logits_at
from .io import progress, restore_training_state, torch_save, training_state
from .stacked import _rows, build_models, make_ensemble, stack_positions


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
    bf16: bool = True                # autocast to bfloat16 on CUDA (ignored on CPU)
    compile: bool | str = False      # torch.compile on CUDA (ignored on CPU); a string is the mode, e.g.
                                     # "reduce-overhead" (CUDA graphs) or "max-autotune-no-cudagraphs"
    static_batches: bool | None = None  # pad the last batch to batch_size with zero-weight rows;
                                        # None = only when compiling on CUDA (fixed shapes, no recompiles)
    fused: bool | None = None        # fused AdamW kernel (one pass over all tensors); None = on CPU and CUDA
    checkpoint_path: str | Path | None = None
    checkpoint_every: int = 0        # epochs; 0 = only at the end (when a path is given)
    progress: bool | None = None     # None = automatic (bar when interactive, silent in builds)
    desc: str | None = None


@dataclass
class History:
    """Per-evaluation metric lists, keyed like ``valid_nll`` / ``train_prob_first``; ``epoch`` holds the x axis."""

    data: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.data.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def last(self, key: str) -> float:
        return self.data[key][-1]

    def keys(self):
        return self.data.keys()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    return adamw([p for p in model.parameters() if p.requires_grad], cfg, device)


def adamw(params: list[torch.Tensor], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type in ("cpu", "cuda") if cfg.fused is None else cfg.fused
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **extra)


def compile_mode(cfg: TrainConfig, device: torch.device) -> str | None:
    """The ``torch.compile`` mode to train with, or None for eager (always eager off CUDA)."""
    if not cfg.compile or device.type != "cuda":
        return None
    return "default" if cfg.compile is True else str(cfg.compile)


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


def train(model: torch.nn.Module, train_data: SeqData, cfg: TrainConfig,
          eval_splits: dict[str, SeqData] | None = None,
          on_epoch_end: Callable[[int, History], None] | None = None) -> History:
    """Train ``model`` in place and return its history.

    ``eval_splits`` maps names (e.g. ``"train"``, ``"valid"``) to data evaluated every ``eval_every``
    epochs. With a ``checkpoint_path`` the state is saved atomically every ``checkpoint_every`` epochs
    and at the end; calling ``train`` again with the same path resumes and ends with the same metrics.
    """
    device = torch.device(cfg.device)
    model.to(device)
    eval_splits = {"train": train_data} if eval_splits is None else eval_splits
    optimizer = make_optimizer(model, cfg, device)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    scheduler = None
    if cfg.warmup_steps:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    shuffle = torch.Generator().manual_seed(cfg.seed)
    history, start_epoch = History(), 0

    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        restore_training_state(state, model, optimizer, device, scheduler, shuffle=shuffle)
        history = History(state["history"])
        start_epoch = state["epoch"]

    def save(epoch: int) -> None:
        if ckpt is None:
            return
        torch_save({**training_state(model, optimizer, device, scheduler, shuffle=shuffle),
                    "history": history.data, "epoch": epoch}, ckpt)

    mode = compile_mode(cfg, device)
    static = uses_static_batches(cfg, device)
    forward = model if mode is None else torch.compile(model, mode=mode, dynamic=False if static else None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    data = train_data.to(device)
    index, weight = loss_positions(data.loss_mask(cfg.loss_whole_sequence))
    targets = data.tokens[:, 1:].gather(1, index)
    if index.shape[1] == data.tokens.shape[1] - 1 and bool(weight.all()):
        index = None                 # every position is scored: plain full logits

    model.train()
    epochs = progress(range(start_epoch, cfg.epochs), total=cfg.epochs, desc=cfg.desc, enabled=cfg.progress)
    if hasattr(epochs, "update") and start_epoch:
        epochs.update(start_epoch)
    for epoch in epochs:
        order = torch.randperm(len(data), generator=shuffle).to(device)
        total, count = torch.zeros((), device=device), 0
        for b in range(steps_per_epoch):
            idx, real = batch_rows(order, b, cfg.batch_size, static)
            n = min(cfg.batch_size, len(data) - b * cfg.batch_size)  # real rows, counted on the host
            w = weight[idx] if real is None else weight[idx] & real[:, None]
            mark_cudagraph_step(mode)
            with autocast:
                logits = logits_at(model, data.tokens[idx, :-1], None if index is None else index[idx], forward)
            loss = weighted_loss(logits, targets[idx], w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.detach() * n
            count += n
        done = epoch + 1
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            history.add(epoch=done, train_loss=(total / count).item(), **evaluate(model, eval_splits))
            model.train()
        if on_epoch_end is not None:
            on_epoch_end(done, history)
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.epochs:
            save(done)
    save(cfg.epochs)
    model.eval()
    return history


def config_from_params(p, seed: int, device, checkpoint=None, eval_every: int | None = None,
                       **extra) -> TrainConfig:
    """TrainConfig from a notebook's validated parameters (names as in the parameters cell)."""
    get = (lambda k, d=None: p.get(k, d)) if isinstance(p, dict) else (lambda k, d=None: getattr(p, k, d))
    epochs = get("epochs")
    return TrainConfig(
        epochs=epochs, batch_size=get("batch_size"), lr=get("lr"), weight_decay=get("weight_decay", 0.0),
        betas=tuple(get("betas", (0.9, 0.999))), loss_whole_sequence=get("loss_whole_sequence", False),
        eval_every=eval_every or max(1, epochs // 100), seed=seed, device=device,
        compile=get("compile", False), checkpoint_path=checkpoint,
        checkpoint_every=max(1, epochs // 10) if checkpoint else 0, **extra)


def clip_per_seed(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for each seed separately (grads [S, ...]); returns the per-seed norms [S]."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads])   # [P, S]
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
    return total


def train_seeds(make_model: Callable[[int], nn.Module] | Sequence[nn.Module], datasets: Sequence[SeqData],
                cfg: TrainConfig, eval_splits: Sequence[dict[str, SeqData]] | None = None,
                seeds: Sequence[int] | None = None,
                on_epoch_end: Callable[[int, list[History]], None] | None = None,
                backend: str = "auto", sync_every: int = 0) -> list[History]:
    """Train one model per seed, all in one batched model; return one History per seed.

    ``make_model(seed)`` builds a model (called right after ``seed_everything(seed)``), or pass the built
    models (they are trained in place). ``datasets[s]`` is seed ``s``'s training data (same size for
    all seeds), ``eval_splits[s]`` its evaluation splits (default: ``{"train": datasets[s]}``), and
    ``seeds[s]`` seeds its data shuffling (``cfg.seed`` is not used). Everything else in ``cfg`` means
    what it means for :func:`reasoning_lab.training.train`, checkpoints included: with
    ``checkpoint_path`` one file holds the whole stack and a second call resumes from it.

    The models receive the trained weights at the end. With ``sync_every = k > 0`` they also receive the
    current weights after every ``k``-th epoch, before ``on_epoch_end`` is called (for hooks that look at
    a model during training, e.g. to record snapshots); they are moved to ``cfg.device`` first.
    """
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
    models = list(make_model) if isinstance(make_model, (list, tuple)) else build_models(make_model, seeds)
    if len(models) != len(seeds):
        raise ValueError(f"got {len(models)} models for {len(seeds)} seeds: expected one per seed")

    if sync_every < 0:
        raise ValueError(f"parameter sync_every={sync_every} is not allowed: expected 0 (never) or a positive "
                         "number of epochs")
    device = torch.device(cfg.device)
    S, N = len(seeds), len(datasets[0])
    ens = make_ensemble(models, backend).to(device)
    if sync_every:
        for m in models:
            m.to(device)
    trainable = [p for p in ens.parameters() if p.requires_grad]
    optimizer = adamw(trainable, cfg, device)
    steps_per_epoch = math.ceil(N / cfg.batch_size)
    scheduler = None
    if cfg.warmup_steps:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    shuffles = [torch.Generator().manual_seed(s) for s in seeds]
    histories, start_epoch = [History() for _ in seeds], 0

    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state.get("seeds") != seeds:
            raise ValueError(f"checkpoint {ckpt} holds seeds {state.get('seeds')}, not {seeds}")
        restore_training_state(state, ens, optimizer, device, scheduler, shuffles=shuffles)
        histories = [History(h) for h in state["histories"]]
        start_epoch = state["epoch"]

    def save(epoch: int) -> None:
        if ckpt is None:
            return
        torch_save({**training_state(ens, optimizer, device, scheduler, shuffles=shuffles),
                    "histories": [h.data for h in histories], "epoch": epoch, "seeds": seeds}, ckpt)

    mode = compile_mode(cfg, device)
    static = uses_static_batches(cfg, device)
    forward = ens if mode is None else torch.compile(ens, mode=mode, dynamic=False if static else None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    tokens = torch.stack([d.tokens for d in datasets]).to(device)                      # [S, N, T]
    index, weight = stack_positions([d.to(device).loss_mask(cfg.loss_whole_sequence) for d in datasets])
    targets = tokens[..., 1:].gather(2, index)
    if index.shape[-1] == tokens.shape[-1] - 1 and bool(weight.all()):
        index = None                 # every position is scored: plain full logits

    ens.train()
    epochs = progress(range(start_epoch, cfg.epochs), total=cfg.epochs, desc=cfg.desc, enabled=cfg.progress)
    if hasattr(epochs, "update") and start_epoch:
        epochs.update(start_epoch)
    for epoch in epochs:
        orders = torch.stack([torch.randperm(N, generator=g) for g in shuffles]).to(device)   # [S, N]
        total, count = torch.zeros(S, device=device), 0
        for b in range(steps_per_epoch):
            idx, real = batch_rows(orders, b, cfg.batch_size, static)           # [S, B], [B] | None
            n = min(cfg.batch_size, N - b * cfg.batch_size)       # real rows, counted on the host
            w = _rows(weight, idx)
            if real is not None:
                w = w & real.view(1, -1, 1)
            mark_cudagraph_step(mode)
            with autocast:
                logits = forward(_rows(tokens, idx)[..., :-1], None if index is None else _rows(index, idx))
            ce = F.cross_entropy(logits.float().flatten(0, 2), _rows(targets, idx).flatten(),
                                 reduction="none").view(S, -1)
            wf = w.reshape(S, -1).to(ce.dtype)
            losses = (ce * wf).sum(1) / wf.sum(1).clamp_min(1.0)                # [S]: each seed's loss
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            if cfg.grad_clip:
                clip_per_seed(trainable, cfg.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += losses.detach() * n
            count += n
        done = epoch + 1
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            metrics = evaluate_seeds(ens, eval_splits)
            for h, loss, m in zip(histories, (total / count).tolist(), metrics):
                h.add(epoch=done, train_loss=loss, **m)
            ens.train()
        if sync_every and (done % sync_every == 0 or done == cfg.epochs):
            ens.write_back(models)
        if on_epoch_end is not None:
            on_epoch_end(done, histories)
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.epochs:
            save(done)
    save(cfg.epochs)
    ens.eval()
    for m in models:
        m.to(device).eval()
    ens.write_back(models)
    return histories


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the entries with nonzero ``weight`` (logits [B, K, V], targets/weight [B, K])."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    w = weight.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1.0)
