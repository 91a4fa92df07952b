"""Epochs over fixed sentences: the batch source and answer cross-entropy that plug the sentence tasks
into :func:`reasoning_lab.train.fit`, and the seeds of one chapter trained side by side.

Data are equal-length token rows plus a boolean mask of the *answer* tokens (:class:`~.data.SeqData`).
The loss is taken on the answer tokens, or on every next-token prediction with ``whole_sequence``.
Only the scored positions go through the output layer (:func:`~.data.loss_positions`,
``Transformer(index=)``). With a CUDA-graph compile mode every batch has the same shape: the last,
partial batch is padded with rows of weight zero, which changes neither the loss nor the gradient.

:func:`seed_runs` is what the reversal, chain and implicit-reasoning chapters train with: one data set
per seed, one model per seed (all of them as one batched model, :mod:`.stacked`), evaluated on their
splits about 30 times per run, frames of the first seed for a training player (kept in the
checkpoint, so that a resumed or re-rendered run still has them), and the :class:`~.train.Trained`
result that each study's run completes with its metrics.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import SeqData, loss_positions
from .evaluate import evaluate, evaluate_seeds, logits_at
from .model import model_from_params
from .stacked import Stacked, _rows, build_models, make_ensemble, stack_positions
from .train import History, LoopConfig, Trained, compile_mode, default_eval_every, fit


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


class EpochBatches:
    """Shuffled epochs over ``n`` rows, one generator per seed (``seeds``): ``batch(step)`` gives the row
    indices ``[B]`` (``[S, B]`` for several seeds), the real-row mask of a padded batch (or None) and the
    number of real rows. A new permutation is drawn at the first step of each epoch. The checkpointed
    state names the seeds (a checkpoint of other seeds is refused)."""

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int], static: bool = False, device="cpu",
                 stacked: bool = False):
        self.n, self.batch_size, self.static, self.device, self.stacked = n, batch_size, static, device, stacked
        self.steps_per_epoch = math.ceil(n / batch_size)
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.order = None

    def batch(self, step: int):
        b = step % self.steps_per_epoch
        if b == 0 or self.order is None:
            orders = [torch.randperm(self.n, generator=g) for g in self.generators]
            self.order = (torch.stack(orders) if self.stacked else orders[0]).to(self.device)
        idx, real = batch_rows(self.order, b, self.batch_size, self.static)
        return idx, real, min(self.batch_size, self.n - b * self.batch_size)   # real rows, counted on the host

    def state_dict(self) -> dict:
        return {"generators": [g.get_state() for g in self.generators], "seeds": self.seeds,
                "order": None if self.order is None else self.order.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seeds", self.seeds) != self.seeds:
            raise ValueError(f"the checkpoint holds seeds {state['seeds']}, not {self.seeds}")
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


# ---------------------------------------------------------------------------------------------------
# The loop configuration of an epoch run, from a chapter's parameters


def epoch_loop(p: dict, n_rows: int, device, checkpoint=None, **override) -> LoopConfig:
    """The :class:`~.train.LoopConfig` of ``p["epochs"]`` epochs over ``n_rows`` sentences in batches of
    ``p["batch_size"]``: AdamW at ``p["lr"]`` with the chapter's weight decay and betas, ``compile``
    from ``p``, the logged training loss averaged per epoch, about 30 evaluations (every
    ``p["eval_every"]`` epochs where a chapter sets it), and with a ``checkpoint`` path a checkpoint
    every tenth of the run. ``override``: any :class:`LoopConfig` field (``eval_every`` in steps)."""
    spe = math.ceil(n_rows / p["batch_size"])
    epochs = p["epochs"]
    loop = dict(steps=epochs * spe, lr=p["lr"], weight_decay=p.get("weight_decay", 0.0),
                betas=tuple(p.get("betas", (0.9, 0.999))), period=spe,
                eval_every=(p.get("eval_every") or default_eval_every(epochs)) * spe,
                compile=p.get("compile", False), device=device, checkpoint_path=checkpoint,
                checkpoint_every=max(1, epochs // 10) * spe if checkpoint else 0)
    loop.update(override)
    return LoopConfig(**loop)


def _static(loop: LoopConfig, static: bool | None) -> bool:
    """Pad the last batch to a fixed shape: when asked, else when compiling on CUDA (no recompiles)."""
    return compile_mode(loop, torch.device(loop.device)) is not None if static is None else bool(static)


def _epoch_hook(on_epoch_end: Callable | None, steps_per_epoch: int, single: bool) -> list:
    """A :func:`fit` hook calling ``on_epoch_end(epoch, history)`` at the end of every epoch."""
    if on_epoch_end is None:
        return []

    def hook(done: int, histories: list[History]) -> None:
        if done % steps_per_epoch == 0:
            on_epoch_end(done // steps_per_epoch, histories[0] if single else histories)
    return [hook]


def _check_period(loop: LoopConfig, n: int, batch_size: int) -> int:
    spe = math.ceil(n / batch_size)
    if loop.period != spe:
        raise ValueError(f"the loop's period ({loop.period} steps) must be one epoch: {spe} steps of "
                         f"{batch_size} over {n} sentences (build it with epoch_loop)")
    return spe


def train_one(model: nn.Module, train_data: SeqData, loop: LoopConfig, batch_size: int, seed: int = 0,
              eval_splits: dict[str, SeqData] | None = None, whole_sequence: bool = False,
              static: bool | None = None, on_epoch_end: Callable[[int, History], None] | None = None) -> History:
    """Train one ``model`` in place with the answer cross-entropy (shuffling seeded with ``seed``) and
    return its history; ``eval_splits`` (default: the training data) are evaluated on the loop's
    schedule. What :func:`train_seeds` does for several seeds at once."""
    device = torch.device(loop.device)
    model.to(device)
    eval_splits = {"train": train_data} if eval_splits is None else eval_splits
    spe = _check_period(loop, len(train_data), batch_size)
    static = _static(loop, static)
    batches = EpochBatches(len(train_data), batch_size, [seed], static, device)
    objective = AnswerCrossEntropy(model, train_data, whole_sequence, device)
    loop = replace(loop, static_shapes=static)
    return fit(model, batches, objective, loop,
               evaluate=lambda done: {"epoch": done // spe, **evaluate(model, eval_splits)},
               hooks=_epoch_hook(on_epoch_end, spe, single=True))[0]


def train_seeds(models: Sequence[nn.Module], datasets: Sequence[SeqData], loop: LoopConfig, batch_size: int,
                seeds: Sequence[int], eval_splits: Sequence[dict[str, SeqData]] | None = None,
                whole_sequence: bool = False, static: bool | None = None,
                on_epoch_end: Callable[[int, list[History]], None] | None = None, sync_every: int = 0,
                backend: str = "auto", hooks: Sequence[Callable] = (), state: dict | None = None) -> list[History]:
    """Train one model per seed, all in one batched model (:mod:`.stacked`) fed to :func:`fit`; return one
    History per seed.

    ``models[s]`` is seed ``seeds[s]``'s model (trained in place; built with :func:`build_models` for the
    same initial weights as separate runs), ``datasets[s]`` its training data (same size for all seeds),
    ``eval_splits[s]`` its evaluation splits (default: ``{"train": datasets[s]}``), and ``seeds[s]``
    seeds its shuffling. ``loop`` comes from :func:`epoch_loop`; with a checkpoint path one file holds
    the whole stack and a second call resumes from it.

    The models receive the trained weights at the end. With ``sync_every = k > 0`` they also receive the
    current weights after every ``k``-th epoch, before ``on_epoch_end`` is called (for hooks that look at
    a model during training, e.g. to record frames); they are moved to ``loop.device`` first.
    ``hooks`` and ``state`` go to :func:`fit` as they are.
    """
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
    if len(models) != len(seeds):
        raise ValueError(f"got {len(models)} models for {len(seeds)} seeds: expected one per seed")
    device = torch.device(loop.device)
    spe = _check_period(loop, len(datasets[0]), batch_size)
    epochs = loop.steps // spe
    ens = make_ensemble(list(models), backend).to(device)
    if sync_every:
        for m in models:
            m.to(device)
    static = _static(loop, static)
    batches = EpochBatches(len(datasets[0]), batch_size, seeds, static, device, stacked=True)
    all_hooks = []
    if sync_every:
        all_hooks.append(lambda done, _h: ens.write_back(models)
                         if done % spe == 0 and (done // spe % sync_every == 0 or done // spe == epochs) else None)
    all_hooks += _epoch_hook(on_epoch_end, spe, single=False) + list(hooks)

    def evaluate_all(done: int) -> list[dict]:
        return [{"epoch": done // spe, **m} for m in evaluate_seeds(ens, eval_splits)]

    histories = fit(ens, batches, AnswerCrossEntropy(ens, datasets, whole_sequence, device),
                    replace(loop, static_shapes=static), evaluate=evaluate_all,
                    hooks=all_hooks, state=state)
    for m in models:
        m.to(device).eval()
    ens.write_back(models)
    return histories


# ---------------------------------------------------------------------------------------------------
# Frames recorded during training, kept in the checkpoint


class Frames:
    """``(x, payload)`` snapshots taken during training (payload: tensors or plain data), saved with the
    checkpoint as :func:`fit`'s ``state``, so that a run resumed, or rendered again from its finished
    checkpoint, has every frame."""

    def __init__(self):
        self.items: list[tuple[int, Any]] = []

    def add(self, x: int, payload: Any) -> None:
        self.items.append((int(x), payload))

    def state_dict(self) -> dict:
        return {"x": [x for x, _ in self.items], "payload": [p for _, p in self.items]}

    def load_state_dict(self, state: dict) -> None:
        self.items = list(zip(state["x"], state["payload"]))


def seed_runs(p: dict, make_data: Callable[[int], Any], device, checkpoint=None,
              extra_splits: Callable[[Any], dict] | None = None,
              record: Callable[[Any, Any], Any] | None = None, n_frames: int = 15,
              hooks: Sequence[Callable] = (), loop: dict | None = None, desc: str | None = None,
              train_on: Callable[[Any], SeqData] | None = None, vocab_size: int | None = None,
              **overrides) -> Trained:
    """Train the seeds ``p["seed"] .. p["seed"] + p["seeds"] - 1`` of a chapter's transformer: seed ``s``
    on ``make_data(s)`` (an object with ``train``, ``valid`` and ``vocab_size``), evaluated on its
    ``train`` and ``valid`` sentences and on ``extra_splits(data)``, all seeds as one batched model.

    ``train_on(data)``, if given, is what each seed trains on instead of its ``train`` sentences (which
    stay the ``train`` split evaluated), with a model vocabulary of ``vocab_size`` (default the data's).
    ``overrides`` replace parameters (e.g. ``epochs``, ``lr``, ``weight_decay``); ``loop``: fields of
    the :class:`LoopConfig` to override (e.g. ``bf16``, ``progress``); ``hooks`` go to :func:`fit`.
    ``record(model, data)``, if given, is kept with the epoch about ``n_frames`` times during training,
    for the first seed (``Trained.frames``; saved in the checkpoint). The absolute-position table has
    ``p["max_len"]`` rows, or the sentence length when that is 0 or absent.

    Returns a :class:`Trained` with ``metrics`` empty (the study adds them), ``data`` the seeds' data
    sets and ``extra["inits"]`` the input embeddings of each model before training (on the CPU)."""
    params = {**p, **overrides}
    if params["seeds"] < 1:
        raise ValueError(f"parameter seeds={params['seeds']} is not allowed: expected at least 1")
    seeds = list(range(params["seed"], params["seed"] + params["seeds"]))
    sets = [make_data(s) for s in seeds]
    fit_on = [train_on(d) if train_on else d.train for d in sets]
    seq_len = fit_on[0].tokens.shape[1]
    max_len = params.get("max_len") or seq_len
    if max_len < seq_len:
        raise ValueError(f"parameter max_len={max_len} is not allowed: expected 0 or at least the sequence "
                         f"length {seq_len}")
    vocab = vocab_size or sets[0].vocab_size
    models = build_models(lambda _s: model_from_params(params, vocab, max_len=max_len), seeds)
    inits = [m.tok_emb.weight.detach().clone().cpu() for m in models]
    cfg = epoch_loop(params, len(fit_on[0]), device, checkpoint,
                     desc=desc or f"seeds {seeds[0]}-{seeds[-1]}", **(loop or {}))
    epochs = params["epochs"]
    frames = Frames()
    every = max(1, epochs // n_frames)

    def snapshot(epoch, _histories):
        if epoch % every == 0 or epoch == epochs:
            frames.add(epoch, record(models[0], sets[0]))

    splits = [{"train": d.train, "valid": d.valid, **(extra_splits(d) if extra_splits else {})} for d in sets]
    histories = train_seeds(models, fit_on, cfg, params["batch_size"], seeds, splits,
                            whole_sequence=params.get("loss_whole_sequence", False),
                            on_epoch_end=None if record is None else snapshot,
                            sync_every=every if record is not None else 0, hooks=hooks,
                            state={"frames": frames} if record is not None else None)
    return Trained(list(models), histories, {}, data=sets, frames=frames.items,
                   extra={"inits": inits, "epochs": epochs, "lr": params["lr"], "seeds": seeds})
