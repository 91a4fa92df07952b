"""Evaluation: the log-probability of each example's answer tokens given its prefix, for one model or a
stack of seeds, and the split-level summaries (NLL, probability, exact match) built on it."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .data import SeqData, loss_positions
from .model import Transformer
from .stacked import Stacked, stack_positions


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


@torch.no_grad()
def stacked_answer_logprobs(ens: Stacked, tokens: torch.Tensor, answer: torch.Tensor,
                            batch_size: int = 2048) -> dict[str, torch.Tensor]:
    """:func:`reasoning_lab.training.answer_logprobs` for all seeds at once (tokens/answer [S, N, T])."""
    was_training = ens.training
    ens.eval()
    device = next(ens.parameters()).device
    whole, first, correct = [], [], []
    for start in range(0, tokens.shape[1], batch_size):
        tok_in = tokens[:, start:start + batch_size].to(device)
        index, mask = stack_positions(list(answer[:, start:start + batch_size, 1:].to(device)))
        logp = F.log_softmax(ens(tok_in[..., :-1], index).float(), dim=-1)
        tgt = tok_in[..., 1:].gather(2, index)
        tok = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        whole.append((tok * mask).sum(-1).cpu())
        first.append(tok[..., 0].cpu())
        correct.append(((logp.argmax(-1) == tgt) | ~mask).all(-1).cpu())
    ens.train(was_training)
    return {"whole": torch.cat(whole, 1), "first": torch.cat(first, 1), "correct": torch.cat(correct, 1)}


def evaluate_seeds(ens: Stacked, splits: Sequence[dict[str, SeqData]]) -> list[dict[str, float]]:
    """:func:`reasoning_lab.training.evaluate` of every seed (``splits[s]`` is seed ``s``'s dict)."""
    out = [{} for _ in splits]
    for name in splits[0]:
        parts = [sp[name] for sp in splits]
        if len(parts[0]) == 0:
            continue
        if any(p.tokens.shape != parts[0].tokens.shape for p in parts):
            raise ValueError(f"split {name!r} must have the same shape for every seed")
        lp = stacked_answer_logprobs(ens, torch.stack([p.tokens for p in parts]),
                                     torch.stack([p.answer for p in parts]))
        for s in range(len(splits)):
            whole, first = lp["whole"][s], lp["first"][s]
            out[s][f"{name}_nll"] = -whole.mean().item()
            out[s][f"{name}_nll_first"] = -first.mean().item()
            out[s][f"{name}_prob"] = whole.exp().mean().item()
            out[s][f"{name}_prob_first"] = first.exp().mean().item()
            out[s][f"{name}_acc"] = lp["correct"][s].float().mean().item()
    return out
