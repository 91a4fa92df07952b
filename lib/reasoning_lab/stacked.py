"""Train every seed of one configuration at once, as one batched model.

The small experiments of the book (a few hundred sentences, batch 64, a 2-layer model) give a GPU
kernels far too small to keep it busy: a step costs its launches, not its arithmetic. Stacking the ``S``
seeds along a leading axis runs each operation once for all of them, ``S`` times larger. On a CPU the
same step is mostly arithmetic already, so the gain there is small (measured at the reversal defaults,
3 seeds, one thread: about 1.2x less CPU time end to end with the per-epoch evaluations included, while
the training steps alone run at about the sequential speed; bench/bench_training.py).

:func:`train_seeds` does for ``S`` seeds what ``S`` calls of :func:`reasoning_lab.train.train` do, with
the same results up to float rounding:

* the same initial weights: each model is built right after ``seed_everything(seed)``;
* the same batches: each seed shuffles its own data with its own generator seeded with ``seed``;
* the same loss and gradient: the loss of the batch is the *sum* of the per-seed losses, and seed ``s``'s
  weights only enter seed ``s``'s loss, so each slice of the stacked gradient is that seed's gradient;
* the same optimizer: AdamW is elementwise, so one AdamW over stacked tensors is ``S`` AdamWs; gradient
  clipping (which is not elementwise) is done per seed;
* the same evaluation (:func:`reasoning_lab.evaluate.evaluate`), per seed, and one
  :class:`~reasoning_lab.train.History` per seed.

Two back-ends compute the batched forward pass. For our :class:`~reasoning_lab.model.Transformer`,
:class:`StackedTransformer` holds weights of shape ``[S, ...]`` and runs the model's own block function
(:func:`reasoning_lab.model.block`) with per-seed linear layers and norms: batched matrix products
(``baddbmm`` gives bit-for-bit the products of ``addmm``); attention, activations and the loss carry no
weights, so seeds are folded into the batch there. The model itself is not written a second time.
Any other module goes through ``torch.func`` (``stack_module_state`` + ``functional_call`` + ``vmap``),
:class:`VmapEnsemble`.

What is not identical: LayerNorm/RMSNorm apply their per-seed scale as a separate multiply (the one-model
kernel fuses it), which moves results by float rounding (~1e-7 relative per step); and with
``dropout > 0`` the masks come from one random stream for the whole stack, so they differ from those of
separate runs (they are still independent across seeds, and deterministic for a given list of seeds).
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import loss_positions
from .devices import seed_everything
from .model import Transformer, block, gather_rows


def build_models(make_model: Callable[[int], nn.Module], seeds: Sequence[int]) -> list[nn.Module]:
    """One model per seed, each built right after ``seed_everything(seed)`` (as a sequential loop would)."""
    models = []
    for s in seeds:
        seed_everything(s)
        models.append(make_model(s))
    return models


def _key(name: str) -> str:          # parameter names may not contain "." inside a ParameterDict
    return name.replace(".", "__")


class Stacked(nn.Module):
    """Stacked copies of the parameters of ``S`` identical-architecture modules (shape ``[S, ...]``)."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        names = [n for n, _ in models[0].named_parameters()]
        for m in models[1:]:
            if [n for n, _ in m.named_parameters()] != names:
                raise ValueError("the models of an ensemble must have the same architecture")
        self.n_seeds = len(models)
        self.names = names
        self.stack = nn.ParameterDict()
        for name in names:
            ps = [dict(m.named_parameters())[name] for m in models]
            if any(p.shape != ps[0].shape for p in ps):
                raise ValueError(f"parameter {name} has different shapes across the models")
            self.stack[_key(name)] = nn.Parameter(torch.stack([p.detach() for p in ps]).clone(),
                                                  requires_grad=ps[0].requires_grad)

    def p(self, name: str) -> torch.Tensor:
        return self.stack[_key(name)]

    def named_stacked(self):
        return [(n, self.p(n)) for n in self.names]

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module]) -> None:
        """Copy seed ``s``'s trained weights into ``models[s]``."""
        for s, m in enumerate(models):
            for name, param in m.named_parameters():
                param.copy_(self.p(name)[s])


class _StackedLinear(torch.autograd.Function):
    """``x @ W^T + b`` per seed (x [S, N, in], W [S, out, in], b [S, out] or None), with the weight gradient
    computed as ``g^T @ x``: it comes out in the weight's own layout, so autograd does not re-copy it (the
    default backward of ``bmm(x, W^T)`` yields a transposed gradient whose copy costs as much as the
    product). Each seed's products are bit-for-bit those of ``F.linear`` on one model."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        wt = w.transpose(1, 2)
        return torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


class StackedTransformer(Stacked):
    """``S`` :class:`Transformer` s of one configuration with stacked weights: ``forward(tokens [S, B, T],
    index [S, B, K] | None) -> logits [S, B, K, vocab]`` (``K = T`` without ``index``)."""

    def __init__(self, models: Sequence[Transformer]):
        super().__init__(models)
        self.cfg = models[0].cfg
        if any(m.cfg != self.cfg for m in models):
            raise ValueError("the models of an ensemble must share one ModelConfig")
        if self.cfg.pos_encoding == "rotary":
            self.register_buffer("rope_cos", models[0].rope_cos.clone(), persistent=False)
            self.register_buffer("rope_sin", models[0].rope_sin.clone(), persistent=False)

    custom_linear = True     # the hand-written backward on CPU without autocast (elsewhere autograd's own)

    def _linear(self, x, name, w=None):
        """Seed ``s``'s linear layer ``name`` on ``x[s]`` ([S, ..., in] -> [S, ..., out])."""
        w = self.p(name + ".weight") if w is None else w
        bias = self.p(name + ".bias") if _key(name + ".bias") in self.stack else None
        x3 = x.reshape(x.shape[0], -1, x.shape[-1])
        if self.custom_linear and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
            y = _StackedLinear.apply(x3, w, bias)
        else:
            wt = w.transpose(1, 2)
            y = torch.bmm(x3, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), x3, wt)
        return y.view(*x.shape[:-1], y.shape[-1])

    def _norm(self, x, name):
        cfg = self.cfg
        w = self.p(name + ".weight").view(-1, *([1] * (x.dim() - 2)), x.shape[-1])
        if cfg.arch == "gpt":
            b = self.p(name + ".bias").view(w.shape)
            return torch.addcmul(b, F.layer_norm(x, (cfg.d_model,), eps=cfg.norm_eps), w)
        return F.rms_norm(x, (cfg.d_model,), None, cfg.norm_eps) * w

    def _drop(self, x):
        return F.dropout(x, self.cfg.dropout, self.training) if self.cfg.dropout and self.training else x

    def forward(self, tokens: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        S, B, T = tokens.shape
        d = cfg.d_model
        if T > cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={cfg.max_len}")
        emb = self.p("tok_emb.weight")
        V = emb.shape[1]
        offset = (torch.arange(S, device=tokens.device) * V).view(S, 1, 1)
        x = F.embedding(tokens + offset, emb.reshape(S * V, d))               # [S, B, T, d]
        if cfg.pos_encoding == "absolute":
            x = x + self.p("pos_emb.weight")[:, None, :T]
        x = self._drop(x)
        rope = (self.rope_cos[:T], self.rope_sin[:T]) if cfg.pos_encoding == "rotary" else None
        for i in range(cfg.n_layers):   # the model's own block, on per-seed weights; as Transformer, the
            last = i == cfg.n_layers - 1  # last MLP runs on the scored rows only
            x = block(x, _SeedOps(self, f"blocks.{i}."), cfg, rope, index if last else None, self.training)
        if index is not None and not cfg.n_layers:
            x = gather_rows(x, index)
        head = emb if cfg.tie_embeddings else self.p("head.weight")
        return self._linear(self._norm(x, "norm_f"), "head", head)


class _SeedOps:
    """The :func:`reasoning_lab.model.block` operations of block ``prefix`` of a :class:`StackedTransformer`."""

    def __init__(self, st: StackedTransformer, prefix: str):
        self.st, self.pre = st, prefix
        self.gate = self._lin("mlp.gate") if st.cfg.arch == "llama" else None

    def _lin(self, name):
        return lambda x: self.st._linear(x, self.pre + name)

    def norm1(self, x):
        return self.st._norm(x, self.pre + "norm1")

    def norm2(self, x):
        return self.st._norm(x, self.pre + "norm2")

    def drop(self, x):
        return self.st._drop(x)

    def qkv(self, x):
        return self.st._linear(x, self.pre + "attn.qkv")

    def proj(self, x):
        return self.st._linear(x, self.pre + "attn.proj")

    def up(self, x):
        return self.st._linear(x, self.pre + "mlp.up")

    def down(self, x):
        return self.st._linear(x, self.pre + "mlp.down")


class VmapEnsemble(Stacked):
    """Any module, batched over seeds with ``torch.func`` (``functional_call`` under ``vmap``)."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__(models)
        self.base = [copy.deepcopy(models[0]).to("meta")]   # a list: not a registered submodule
        buffers = [dict(m.named_buffers()) for m in models]
        self.buffer_names = list(buffers[0])
        for name in self.buffer_names:
            self.register_buffer(_key(name), torch.stack([b[name] for b in buffers]).clone(), persistent=False)

    def forward(self, tokens: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        base = self.base[0]
        base.train(self.training)
        params = {n: self.p(n) for n in self.names}
        buffers = {n: getattr(self, _key(n)) for n in self.buffer_names}

        def one(p, b, x, i):
            logits = torch.func.functional_call(base, (p, b), (x,))
            return logits if i is None else logits.gather(1, i.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))

        dims = (0, 0, 0, None if index is None else 0)
        with warnings.catch_warnings():   # ops without a batching rule run per seed: correct, only slower
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            return torch.vmap(one, in_dims=dims, randomness="different")(params, buffers, tokens, index)


def make_ensemble(models: Sequence[nn.Module], backend: str = "auto") -> Stacked:
    """``backend``: ``"stacked"`` (our Transformer only), ``"vmap"`` (any module) or ``"auto"``."""
    if backend not in ("auto", "stacked", "vmap"):
        raise ValueError(f"parameter backend={backend!r} is not allowed: expected 'auto', 'stacked' or 'vmap'")
    stacked = all(type(m) is Transformer for m in models)
    if backend == "stacked" and not stacked:
        raise ValueError("backend='stacked' needs reasoning_lab.model.Transformer models")
    return StackedTransformer(models) if stacked and backend != "vmap" else VmapEnsemble(models)


def stack_positions(masks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`loss_positions` of each seed's mask, padded to one width: ``(index, weight)`` [S, N, K]."""
    parts = [loss_positions(m) for m in masks]
    k = max(i.shape[1] for i, _ in parts)
    index = torch.stack([F.pad(i, (0, k - i.shape[1])) for i, _ in parts])
    weight = torch.stack([F.pad(w, (0, k - w.shape[1]), value=False) for _, w in parts])
    return index, weight


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[s, idx[s]]`` for every seed: t [S, N, ...], idx [S, B] -> [S, B, ...]."""
    return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))


