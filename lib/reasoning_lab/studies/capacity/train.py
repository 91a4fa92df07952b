"""The capacity study's objective and batch source for the one loop: fresh question batches every step,
drawn from pre-tokenized tensors, and the answer loss.

There is no fixed dataset and no epoch: each step samples ``batch_size`` questions (1-hop, or 1-hop and
2-hop mixed ``1 : 1/hop_ratio`` as the original's ``order_weights``), and the loss is the answer-token
NLL summed per question and averaged over questions. The steps run in :func:`reasoning_lab.train.fit`
with the :class:`~reasoning_lab.train.LoopConfig` of :func:`.runs.loop_config`.

Under DDP (``reasoning-lab train capacity`` under ``torchrun``) every rank draws the same global batch
from the same generator and trains on its own share of the rows; the gradients are averaged over the
ranks, so a step is the step of one process with the whole batch, up to float rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...evaluate import answer_logprobs
from ...train import History, LoopConfig, _dist, fit
from .questions import Batch, QuestionBank

# What a chapter without its own optimiser parameters trains with (capacity-probes), and the defaults of
# those that have them: AdamW with betas (0.9, 0.98), 2% linear warm-up, then cosine decay to a tenth
# of the learning rate; gradients clipped at norm 1 (.runs.loop_config).
BETAS, SCHEDULE, WARMUP_FRACTION, FINAL_LR, GRAD_CLIP = (0.9, 0.98), "cosine", 0.02, 0.1, 1.0


class AnswerLoss(nn.Module):
    """Summed answer-token NLL per question (nats), averaged over the batch.

    Only what the loss needs is computed: the input stops at the last position that predicts an answer
    token (position 5 for a 1-hop batch, so the 8th token is never fed in), the last block's MLP runs only
    at the answer-predicting positions, and the output layer only on the rows that predict a real answer
    token (a one-token answer leaves two of the three rows out)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        mask = answer[:, 1:]                               # position i predicts token i + 1
        cols = mask.any(0).nonzero().squeeze(1)
        x = self.model.features(tokens[:, :int(cols[-1]) + 1], index=cols.expand(B, -1))
        keep = mask[:, cols]
        logits = self.model.head(self.model.norm_f(x[keep]))
        return F.cross_entropy(logits.float(), tokens[:, 1:][:, cols][keep], reduction="sum") / B


def question_losses(model: nn.Module, batch: Batch, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per question: summed answer NLL (nats) and exact match of the greedy answer (teacher-forced), from
    :func:`reasoning_lab.evaluate.answer_logprobs`."""
    lp = answer_logprobs(model, (batch.tokens, batch.answer), chunk)
    return -lp["whole"], lp["correct"]


def by_subject(values: torch.Tensor, subject: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
    return {s: values[subject == k].mean().item() for k, s in enumerate(names) if (subject == k).any()}


def evaluate(model: nn.Module, sets: dict[str, Batch], subjects: tuple[str, ...]) -> dict[str, float]:
    """Mean loss (nats) and accuracy per set, plus per-subject losses in bits for the ``train_*`` sets."""
    out = {}
    for name, batch in sets.items():
        loss, ok = question_losses(model, batch)
        out[f"{name}_loss"] = loss.mean().item()
        out[f"{name}_acc"] = ok.float().mean().item()
        if name.startswith("train_"):
            for s, v in by_subject(loss / math.log(2), batch.subject, subjects).items():
                out[f"{name}_bits_{s}"] = v
    return out


def subject_bits(res: History, split: str, subjects) -> dict[str, float]:
    """Final per-subject loss (bits) of ``split`` (e.g. ``"train_onehop"``), for the subjects it has."""
    return {s: res.final[f"{split}_bits_{s}"] for s in subjects if f"{split}_bits_{s}" in res.final}


class QuestionBatches:
    """Fresh questions every step: the global batch of ``batch_size`` questions, 2-hop ones at rate ``p2``
    once ``phase2`` is on (at once without a curriculum), drawn from one generator; under DDP each rank
    keeps its contiguous share of the rows (the batch must divide evenly). The checkpointed state holds
    the generator, the phase and the exposure counts (the same on every rank)."""

    def __init__(self, bank: QuestionBank, batch_size: int, p2: float, phase2: bool, seed: int, device):
        _dist_, self.rank, self.world = _dist()
        if batch_size % self.world:
            raise ValueError(f"parameter batch_size={batch_size} is not allowed with {self.world} processes: "
                             "expected a multiple of the number of processes")
        self.bank, self.batch_size, self.p2, self.phase2, self.device = bank, batch_size, p2, phase2, device
        self.generator = torch.Generator().manual_seed(seed * 1000003)
        self.seen = {"one": 0.0, "two": 0.0}

    def batch(self, step: int) -> Batch:
        frac2 = self.p2 if self.phase2 else 0.0
        batch = self.bank.sample(self.batch_size, frac2, self.generator)
        k2 = int(round(self.batch_size * frac2))
        self.seen["one"] += self.batch_size - k2
        self.seen["two"] += k2
        if self.world > 1:
            share = self.batch_size // self.world
            rows = slice(self.rank * share, (self.rank + 1) * share)
            batch = Batch(batch.tokens[rows], batch.answer[rows], batch.subject[rows], batch.hops[rows])
        return batch.to(self.device)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "phase2": self.phase2, "seen": dict(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())
        self.phase2, self.seen = state["phase2"], dict(state["seen"])


def train_capacity(model: nn.Module, bank: QuestionBank, loop: LoopConfig, batch_size: int, seed: int = 0,
                   two_hop: bool = False, hop_ratio: float = 0.1, curriculum: bool = False,
                   eval_questions: int = 2000, hooks=()) -> History:
    """Train ``model`` in place on questions from ``bank`` in the one loop; returns the evaluation history
    (``final``: the last evaluation, ``seconds``: training time).

    The study's own settings: ``two_hop`` mixes 2-hop questions in, at ``hop_ratio`` 2-hop questions per
    1-hop question (weights ``1 : 1/hop_ratio`` as the original); ``curriculum`` asks 1-hop questions only
    until their loss is below 1 nat; ``eval_questions`` per 2-hop evaluation set (1-hop is evaluated on
    every fact). Under DDP the model is wrapped in ``DistributedDataParallel``."""
    dist, _rank, _world = _dist()
    device = torch.device(loop.device)
    model.to(device)
    loss_fn: nn.Module = AnswerLoss(model)
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        loss_fn = DDP(loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
    sets = bank.eval_sets(eval_questions, seed, two_hop=two_hop)
    p2 = 1.0 / (1.0 + hop_ratio) if two_hop else 0.0
    batches = QuestionBatches(bank, batch_size, p2, not curriculum, seed, device)
    n_facts = bank.n * bank.K
    history = History()

    def objective(_forward, batch: Batch):
        return loss_fn(batch.tokens, batch.answer), 1

    def evaluate_now(done: int) -> dict:
        ev = evaluate(model, sets, bank.subjects)
        if not batches.phase2 and ev["train_onehop_loss"] < 1.0:
            batches.phase2 = True
        return {"step": done, "exposures": batches.seen["one"] / n_facts,
                "two_hop_questions": batches.seen["two"], "seconds": history.seconds, **ev}

    return fit(model, batches, objective, loop, evaluate=evaluate_now, hooks=hooks, histories=[history])[0]


def steps_for(exposures: float, bank: QuestionBank, batch_size: int, two_hop: bool, hop_ratio: float) -> int:
    """Steps that show every 1-hop fact ``exposures`` times on average."""
    frac1 = 1.0 - (1.0 / (1.0 + hop_ratio) if two_hop else 0.0)
    return max(1, math.ceil(exposures * bank.n * bank.K / (batch_size * frac1)))
