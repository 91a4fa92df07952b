"""The learned shortest-path model: one token per edge, a target token, a bidirectional encoder and a
scalar read-out on the target token, trained with mean squared error on fresh batches.

This follows the original model {cite}`wang2024shortest`: a vertex embedding of ``d/2`` features,
edge token ``(a, b)`` = ``[E(a), E(b)]``, target token = ``[E(t), E(TARGET)]``, no positional encoding
(the edge list is a set), padding tokens masked out as keys, PyTorch's post-LayerNorm encoder layer
(ReLU MLP, no final norm) and ``Linear(d, 1)`` on the target token's final state.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from ...train import History, LoopConfig, fit
from .data import UNREACHABLE, make_batch


class PathTransformer(nn.Module):
    def __init__(self, max_vertices: int = 15, d_model: int = 64, n_heads: int = 2, n_layers: int = 6,
                 d_ff: int = 256, norm_first: bool = False, dropout: float = 0.0):
        super().__init__()
        if d_model % 2 or d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be even and a multiple of n_heads={n_heads}")
        self.max_vertices = max_vertices
        self.target_id = max_vertices + 1
        self.embed = nn.Embedding(max_vertices + 2, d_model // 2)        # 0 = padding, 1..V, TARGET
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=dropout, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, 1)

    def tokens(self, edges: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token vectors ``[B, E + 1, d]`` and the key padding mask ``[B, E + 1]`` (True = ignore)."""
        tgt = torch.stack((targets, torch.full_like(targets, self.target_id)), -1)[:, None, :]
        pairs = torch.cat((edges, tgt), 1)                                       # [B, E + 1, 2]
        x = self.embed(pairs).flatten(2)
        return x, pairs[..., 0] == 0

    def forward(self, edges: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x, pad = self.tokens(edges, targets)
        h = self.final_norm(self.encoder(x, src_key_padding_mask=pad))
        return self.head(h[:, -1]).squeeze(-1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


LABEL_GROUPS = {"1": (1, 1), "2": (2, 2), "3": (3, 3), "4+": (4, UNREACHABLE - 1),
                "unreachable": (UNREACHABLE, UNREACHABLE)}


def _group_losses(sq: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    out = {}
    for name, (lo, hi) in LABEL_GROUPS.items():
        mask = (labels >= lo) & (labels <= hi)
        out[name] = float(sq[mask].mean()) if bool(mask.any()) else math.nan
    return out


class GraphBatches:
    """Fresh graph batches every step from one generator: ``batch(step)`` is ``(step, tensors)`` with
    ``tensors = draw(batch_size, generator)`` moved to ``device``. The generator is the caller's (its
    state is what a checkpoint saves)."""

    def __init__(self, draw, batch_size: int, generator: torch.Generator, device="cpu"):
        self.draw, self.batch_size, self.generator, self.device = draw, batch_size, generator, device

    def batch(self, step: int) -> tuple[int, tuple[torch.Tensor, ...]]:
        return step, tuple(t.to(self.device) for t in self.draw(self.batch_size, self.generator))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())


def train_steps(model: PathTransformer, optimizer: torch.optim.Optimizer, split: str, steps: int,
                batch_size: int, generator: torch.Generator, log: History | None = None,
                schedule=None, data_kw: dict | None = None, device="cpu", start_step: int = 0,
                grad_clip: float = 0.0, on_step=None, checkpoint=None, checkpoint_every: int = 0,
                hooks=(), state: dict | None = None, **loop) -> History:
    """``steps`` optimizer steps on fresh batches of ``split`` (:func:`reasoning_lab.train.fit` with the MSE
    objective); ``schedule(step) -> lr`` if given (else the optimizer's learning rate); ``grad_clip > 0``
    clips the global gradient norm; ``on_step(step, model)``, if given, is called after every step (e.g.
    to record snapshots; it may switch the model to eval mode, training resumes after). The history
    (``log``, continued when given) records every step's ``step``, ``loss`` and ``by_label`` losses.
    With ``checkpoint`` (a path) the run saves every ``checkpoint_every`` steps and at the end, and a
    second call with the same path resumes from it. ``hooks`` and ``state`` go to :func:`fit`;
    ``loop``: :class:`LoopConfig` fields to override."""
    data_kw = data_kw or {}
    batches = GraphBatches(lambda n, g: make_batch(split, n, g, **data_kw), batch_size, generator, device)

    def objective(forward, batch):
        step, (edges, targets, labels) = batch
        sq = (forward(edges, targets) - labels.float()) ** 2
        loss = sq.mean()
        return loss, 1, {"step": start_step + step, "loss": float(loss.detach()),
                         **{f"by_label/{k}": v for k, v in _group_losses(sq.detach(), labels).items()}}

    all_hooks = []
    if on_step is not None:
        def call(done, _h):
            on_step(start_step + done - 1, model)
            model.train()
        all_hooks.append(call)
    cfg = LoopConfig(**{"steps": steps, "lr": None, "grad_clip": grad_clip or None, "device": device,
                        "schedule": (lambda i: schedule(start_step + i)) if schedule else "constant",
                        "bf16": False, "checkpoint_path": checkpoint, "checkpoint_every": checkpoint_every,
                        "progress": False, **loop})
    return fit(model, batches, objective, cfg, hooks=[*all_hooks, *hooks], optimizer=optimizer,
               histories=[log if log is not None else History()], state=state)[0]


@torch.no_grad()
def predict(model: PathTransformer, edges: torch.Tensor, targets: torch.Tensor, batch_size: int = 4096,
            device="cpu") -> torch.Tensor:
    model.eval()
    out = [model(edges[i:i + batch_size].to(device), targets[i:i + batch_size].to(device)).cpu()
           for i in range(0, len(edges), batch_size)]
    return torch.cat(out)


def histogram2d(labels: torch.Tensor, outputs: torch.Tensor, max_label: int = UNREACHABLE,
                bins: int = 50, lo: float | None = None, hi: float | None = None):
    """Column-normalised 2D histogram: rows = output bins, columns = true labels 0..max_label.

    Each column sums to 1 over the output bins (empty columns stay 0), as in the original figures.
    Returns (matrix [bins, max_label + 1], output bin edges).
    """
    y = labels.long().numpy()
    o = outputs.float().numpy()
    lo = float(min(o.min(), 0.0)) if lo is None else lo
    hi = float(max(o.max(), max_label + 0.5)) if hi is None else hi
    H, _, edges = np.histogram2d(y, o, bins=[np.arange(max_label + 2) - 0.5, np.linspace(lo, hi, bins + 1)])
    col = H.sum(1, keepdims=True)
    H = np.divide(H, col, out=np.zeros_like(H), where=col > 0)
    return H.T, edges


def smooth(x, window: int = 20) -> np.ndarray:
    """Running mean that ignores NaN (for noisy per-step curves)."""
    x = np.asarray(x, dtype=float)
    ok = ~np.isnan(x)
    c = np.convolve(np.where(ok, x, 0.0), np.ones(window), "same")
    n = np.convolve(ok.astype(float), np.ones(window), "same")
    return np.divide(c, n, out=np.full_like(c, np.nan), where=n > 0)


def step_schedule(lr: float, lr_final: float, warmup_steps: int, switch_step: int):
    """Linear warm-up to ``lr``, then ``lr`` until ``switch_step`` and ``lr_final`` after it (the original
    ran 5e-4 for 6,400 steps, then 1e-4)."""
    def schedule(step: int) -> float:
        base = lr if step < switch_step else lr_final
        return base * min(1.0, (step + 1) / warmup_steps) if warmup_steps else base
    return schedule


def split_key(split: str) -> str:
    """``test-onpath-small-target`` -> ``onpath_small_target`` (for metric names)."""
    return split.removeprefix("test-").replace("-", "_")


@torch.no_grad()
def evaluate(model: PathTransformer, data: dict[str, tuple], device="cpu") -> dict[str, dict]:
    """MSE and outputs of ``model`` on fixed evaluation batches ``{split: (edges, targets, labels)}``."""
    out = {}
    for split, (edges, targets, labels) in data.items():
        pred = predict(model, edges, targets, device=device)
        out[split] = {"mse": float(((pred - labels.float()) ** 2).mean()), "outputs": pred, "labels": labels}
    return out
