"""Masked-token training with a uniform masking rate (MLM-U, Kitouni et al. 2024) for a transformer whose
attention sees the whole sentence (``ModelConfig(causal=False)``).

Each training step draws, per sentence, a rate ``r ~ U(0, 1)`` and masks every token with probability ``r``
(at least one token), then trains the model to predict the masked tokens from the rest — left and right
context alike. A question is asked by masking the answer entity and reading the model's predictions there:
the score of an entity is the sum of the log-probabilities of its tokens at their masked positions.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ...io import progress, restore_training_state, torch_save, training_state
from ...data import SeqData
from ...train import History, TrainConfig, make_optimizer


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


@torch.no_grad()
def masked_answer_logprobs(model: torch.nn.Module, data: SeqData, mask_id: int,
                           batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """Per sentence: log p(answer entity) with all its tokens masked at once (sum over them), and whether
    every answer token is the model's top prediction."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    whole, correct = [], []
    for start in range(0, len(data), batch_size):
        part = data.take(slice(start, start + batch_size)).to(device)
        logp = F.log_softmax(model(part.tokens.masked_fill(part.answer, mask_id)).float(), -1)
        tok = logp.gather(-1, part.tokens[..., None]).squeeze(-1)
        whole.append((tok * part.answer).sum(1).cpu())
        correct.append(((logp.argmax(-1) == part.tokens) | ~part.answer).all(1).cpu())
    model.train(was_training)
    return {"whole": torch.cat(whole), "correct": torch.cat(correct)}


def evaluate_masked(model: torch.nn.Module, splits: dict[str, SeqData], mask_id: int) -> dict[str, float]:
    """``<split>_nll``, ``<split>_prob`` and ``<split>_acc`` of the masked answer entity, as in ``evaluate``."""
    out = {}
    for name, data in splits.items():
        if len(data) == 0:
            continue
        lp = masked_answer_logprobs(model, data, mask_id)
        out[f"{name}_nll"] = -lp["whole"].mean().item()
        out[f"{name}_prob"] = lp["whole"].exp().mean().item()
        out[f"{name}_acc"] = lp["correct"].float().mean().item()
    return out


def train_masked(model: torch.nn.Module, train_data: SeqData, cfg: TrainConfig, mask_id: int,
                 eval_splits: dict[str, SeqData] | None = None) -> History:
    """Train ``model`` (bidirectional attention) with MLM-U on the sentences of ``train_data``.

    Same optimiser, shuffling, evaluation schedule, checkpoints and resume as :func:`training.train`;
    ``loss_whole_sequence`` does not apply (the masks decide what is predicted).
    """
    if getattr(getattr(model, "cfg", None), "causal", True):
        raise ValueError("train_masked needs a model with causal=False (attention to both sides)")
    device = torch.device(cfg.device)
    model.to(device)
    eval_splits = {"train": train_data} if eval_splits is None else eval_splits
    optimizer = make_optimizer(model, cfg, device)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    masks = torch.Generator().manual_seed(cfg.seed + 1)
    history, start_epoch = History(), 0
    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        restore_training_state(state, model, optimizer, device, shuffle=shuffle, masks=masks)
        history, start_epoch = History(state["history"]), state["epoch"]

    def save(epoch: int) -> None:
        if ckpt is not None:
            torch_save({**training_state(model, optimizer, device, shuffle=shuffle, masks=masks),
                        "history": history.data, "epoch": epoch}, ckpt)

    tokens = train_data.tokens
    steps = math.ceil(len(tokens) / cfg.batch_size)
    model.train()
    for epoch in progress(range(start_epoch, cfg.epochs), total=cfg.epochs, desc=cfg.desc, enabled=cfg.progress):
        order = torch.randperm(len(tokens), generator=shuffle)
        total = 0.0
        for b in range(steps):
            x = tokens[order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            mask = uniform_masks(len(x), x.shape[1], masks)
            loss = masked_loss(model, x.to(device), mask.to(device), mask_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            total += loss.item() * len(x)
        done = epoch + 1
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            history.add(epoch=done, train_loss=total / len(tokens), **evaluate_masked(model, eval_splits, mask_id))
            model.train()
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.epochs:
            save(done)
    save(cfg.epochs)
    model.eval()
    return history
