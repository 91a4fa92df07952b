"""Masked-token training with a uniform masking rate (MLM-U, Kitouni et al. 2024) for a transformer whose
attention sees the whole sentence (``ModelConfig(causal=False)``).

Each training step draws, per sentence, a rate ``r ~ U(0, 1)`` and masks every token with probability ``r``
(at least one token), then trains the model to predict the masked tokens from the rest — left and right
context alike. A question is asked by masking the answer entity and reading the model's predictions there:
the score of an entity is the sum of the log-probabilities of its tokens at their masked positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...data import SeqData
from ...evaluate import answer_logprobs, evaluate
from ...epochs import EpochBatches
from ...train import History, LoopConfig, fit


def uniform_masks(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``[n, length]`` bool: rate ``r ~ U(0,1)`` per row, each position masked with probability ``r``; a row
    that came out empty gets one uniformly chosen position."""
    rate = torch.rand(n, 1, generator=generator)
    mask = torch.rand(n, length, generator=generator) < rate
    empty = ~mask.any(1)
    pos = torch.randint(length, (n,), generator=generator)
    mask[empty, pos[empty]] = True
    return mask


def masked_loss(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Mean cross-entropy of the original tokens at the masked positions."""
    logits = model(tokens.masked_fill(mask, mask_id))
    return F.cross_entropy(logits[mask].float(), tokens[mask])


def masked_answer_logprobs(model: torch.nn.Module, data: SeqData, mask_id: int,
                           batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """Per sentence: log p(answer entity) with all its tokens masked at once (sum over them), and whether
    every answer token is the model's top prediction (:func:`answer_logprobs` on the masked inputs)."""
    lp = answer_logprobs(model, data, batch_size, inputs=data.tokens.masked_fill(data.answer, mask_id))
    return {"whole": lp["whole"], "correct": lp["correct"]}


def evaluate_masked(model: torch.nn.Module, splits: dict[str, SeqData], mask_id: int) -> dict[str, float]:
    """``<split>_nll``, ``<split>_prob`` and ``<split>_acc`` of the masked answer entity, as in ``evaluate``."""
    return evaluate(model, splits, mask_id=mask_id, batch_size=4096)


class MaskedBatches(EpochBatches):
    """Shuffled epochs of sentences, each batch with fresh uniform-rate masks (their own generator)."""

    def __init__(self, tokens: torch.Tensor, batch_size: int, seed: int, device):
        super().__init__(len(tokens), batch_size, [seed])
        self.tokens, self.target_device = tokens, device
        self.masks = torch.Generator().manual_seed(seed + 1)

    def batch(self, step: int):
        idx, _, n = super().batch(step)
        x = self.tokens[idx]
        mask = uniform_masks(len(x), x.shape[1], self.masks)
        return x.to(self.target_device), mask.to(self.target_device), n

    def state_dict(self) -> dict:
        return {**super().state_dict(), "masks": self.masks.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.masks.set_state(state["masks"].cpu())


def train_masked(model: torch.nn.Module, train_data: SeqData, loop: LoopConfig, batch_size: int, seed: int,
                 mask_id: int, eval_splits: dict[str, SeqData] | None = None, hooks=()) -> History:
    """Train ``model`` (bidirectional attention) with MLM-U on the sentences of ``train_data`` in the one
    loop (:func:`reasoning_lab.train.fit`; ``loop`` from :func:`reasoning_lab.epochs.epoch_loop`), the
    shuffling and the masks seeded with ``seed``. There is no ``loss_whole_sequence``: the masks decide
    what is predicted."""
    if getattr(getattr(model, "cfg", None), "causal", True):
        raise ValueError("train_masked needs a model with causal=False (attention to both sides)")
    device = torch.device(loop.device)
    model.to(device)
    eval_splits = {"train": train_data} if eval_splits is None else eval_splits
    batches = MaskedBatches(train_data.tokens, batch_size, seed, device)
    spe = batches.steps_per_epoch

    def objective(forward, batch):
        x, mask, n = batch
        return masked_loss(forward, x, mask, mask_id), n

    return fit(model, batches, objective, loop, hooks=hooks,
               evaluate=lambda done: {"epoch": done // spe, **evaluate_masked(model, eval_splits, mask_id)})[0]
