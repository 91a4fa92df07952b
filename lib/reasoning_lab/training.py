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
from typing import Callable

import torch
import torch.nn.functional as F

from .models import Transformer
from .runtime import progress, restore_training_state, torch_save, training_state


@dataclass
class SeqData:
    tokens: torch.Tensor            # [N, T] long
    answer: torch.Tensor            # [N, T] bool: positions holding answer tokens (never position 0)
    valid: torch.Tensor | None = None  # [N, T] bool: real (non-padding) tokens; None = all

    def __post_init__(self):
        if self.tokens.shape != self.answer.shape:
            raise ValueError("tokens and answer mask must have the same shape")
        if self.tokens.shape[0] and self.answer[:, 0].any():
            raise ValueError("position 0 cannot be an answer token (nothing predicts it)")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device) -> "SeqData":
        return SeqData(self.tokens.to(device), self.answer.to(device),
                       None if self.valid is None else self.valid.to(device))

    def take(self, index) -> "SeqData":
        return SeqData(self.tokens[index], self.answer[index], None if self.valid is None else self.valid[index])

    def loss_mask(self, whole_sequence: bool) -> torch.Tensor:
        """Mask over positions 1..T-1 of the tokens that are predicted in the loss."""
        if whole_sequence:
            mask = torch.ones_like(self.answer[:, 1:]) if self.valid is None else self.valid[:, 1:]
            return mask
        return self.answer[:, 1:]

    @staticmethod
    def cat(parts: list["SeqData"]) -> "SeqData":
        valid = None
        if any(p.valid is not None for p in parts):
            valid = torch.cat([p.valid if p.valid is not None else torch.ones_like(p.answer) for p in parts])
        return SeqData(torch.cat([p.tokens for p in parts]), torch.cat([p.answer for p in parts]), valid)


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


def loss_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The True positions of each row of ``mask`` [N, P], in order, left-aligned: ``(index, weight)``, both
    [N, K] with K the largest count in a row (at least 1); padding entries have weight False."""
    k = max(1, int(mask.sum(1).max())) if mask.shape[0] else 1
    index = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    return index, mask.gather(1, index)


def logits_at(model: torch.nn.Module, tokens: torch.Tensor, index: torch.Tensor | None,
              forward: Callable | None = None) -> torch.Tensor:
    """Logits at positions ``index`` [B, K] of each row (all positions when None): [B, K, vocab].

    Our :class:`Transformer` computes the output layer only there; any other module is run in full and
    gathered. ``forward`` is a compiled wrapper of ``model`` to call instead of it.
    """
    forward = model if forward is None else forward
    if index is None:
        return forward(tokens)
    if isinstance(model, Transformer):
        return forward(tokens, index=index)
    logits = forward(tokens)
    return logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the entries with nonzero ``weight`` (logits [B, K, V], targets/weight [B, K])."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    w = weight.flatten().to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp_min(1.0)


@torch.no_grad()
def answer_logprobs(model: torch.nn.Module, data: SeqData, batch_size: int = 2048) -> dict[str, torch.Tensor]:
    """Per-example log p(whole answer), log p(first answer token) and exact-match (greedy, teacher-forced)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    whole, first, correct = [], [], []
    for start in range(0, len(data), batch_size):
        part = data.take(slice(start, start + batch_size)).to(device)
        index, mask = loss_positions(part.answer[:, 1:])   # answer positions, first one first
        logp = F.log_softmax(logits_at(model, part.tokens[:, :-1], index).float(), dim=-1)
        tgt = part.tokens[:, 1:].gather(1, index)
        tok = logp.gather(-1, tgt[..., None]).squeeze(-1)
        whole.append((tok * mask).sum(1).cpu())
        first.append(tok[:, 0].cpu())
        correct.append(((logp.argmax(-1) == tgt) | ~mask).all(1).cpu())
    model.train(was_training)
    return {"whole": torch.cat(whole), "first": torch.cat(first), "correct": torch.cat(correct)}


def evaluate(model: torch.nn.Module, splits: dict[str, SeqData]) -> dict[str, float]:
    """Split-level summaries: mean NLL of the answer (whole / first token), mean probability, accuracy."""
    out = {}
    for name, data in splits.items():
        if len(data) == 0:
            continue
        lp = answer_logprobs(model, data)
        out[f"{name}_nll"] = -lp["whole"].mean().item()
        out[f"{name}_nll_first"] = -lp["first"].mean().item()
        out[f"{name}_prob"] = lp["whole"].exp().mean().item()
        out[f"{name}_prob_first"] = lp["first"].exp().mean().item()
        out[f"{name}_acc"] = lp["correct"].float().mean().item()
    return out


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
