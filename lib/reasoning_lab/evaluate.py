"""Evaluation: the log-probability of each example's answer tokens given the rest, for one model or a
stack of seeds, causal or masked, and the split-level summaries (NLL, probability, exact match) built on
it. :func:`answer_logprobs` is the one evaluator every study calls."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .data import SeqData
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


def model_device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def answer_logprobs(model: torch.nn.Module, data: SeqData | tuple[torch.Tensor, torch.Tensor],
                    batch_size: int = 2048, inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per example: ``whole`` = log p(all answer tokens) (sum over them), ``first`` = log p(first answer
    token) and ``correct`` = every answer token is the greedy prediction (teacher-forced).

    ``data``: a :class:`SeqData`, or ``(tokens, answer)`` tensors [N, T]; for a stacked model
    (:class:`~reasoning_lab.stacked.Stacked`) tensors [S, N, T], and the results are [S, N].

    A causal model reads answer token ``t`` at position ``t - 1`` of ``tokens[..., :-1]``. A masked
    model gets ``inputs`` (the tokens with the answers masked, same shape as ``tokens``) and reads answer
    token ``t`` at position ``t`` of them.
    """
    tokens, answer = (data.tokens, data.answer) if isinstance(data, SeqData) else data
    stacked = isinstance(model, Stacked)
    if not stacked:                                    # one model: a stack of one
        tokens, answer = tokens.unsqueeze(0), answer.unsqueeze(0)
        inputs = None if inputs is None else inputs.unsqueeze(0)
    was_training = model.training
    model.eval()
    device = model_device(model)
    whole, first, correct = [], [], []
    for start in range(0, tokens.shape[1], batch_size):
        tok = tokens[:, start:start + batch_size].to(device)
        ans = answer[:, start:start + batch_size].to(device)
        if inputs is None:
            x, read, tgt_all = tok[..., :-1], ans[..., 1:], tok[..., 1:]
        else:
            x, read, tgt_all = inputs[:, start:start + batch_size].to(device), ans, tok
        index, mask = stack_positions(list(read))       # answer positions, first one first: [S, B, K]
        logits = model(x, index) if stacked else logits_at(model, x[0], index[0]).unsqueeze(0)
        logp = F.log_softmax(logits.float(), dim=-1)
        tgt = tgt_all.gather(2, index)
        lp = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        whole.append((lp * mask).sum(-1).cpu())
        first.append(lp[..., 0].cpu())
        correct.append(((logp.argmax(-1) == tgt) | ~mask).all(-1).cpu())
    model.train(was_training)
    out = {"whole": torch.cat(whole, 1), "first": torch.cat(first, 1), "correct": torch.cat(correct, 1)}
    return out if stacked else {k: v[0] for k, v in out.items()}


def summarize(lp: dict[str, torch.Tensor], name: str, first: bool = True) -> dict[str, float]:
    """``<name>_nll``, ``_nll_first``, ``_prob``, ``_prob_first`` and ``_acc`` of one split's log-probs
    (without the ``_first`` entries when ``first`` is False)."""
    whole = lp["whole"]
    out = {f"{name}_nll": -whole.mean().item()}
    if first:
        out[f"{name}_nll_first"] = -lp["first"].mean().item()
    out[f"{name}_prob"] = whole.exp().mean().item()
    if first:
        out[f"{name}_prob_first"] = lp["first"].exp().mean().item()
    out[f"{name}_acc"] = lp["correct"].float().mean().item()
    return out


def evaluate(model: torch.nn.Module, splits: dict[str, SeqData], mask_id: int | None = None,
             batch_size: int = 2048) -> dict[str, float]:
    """Split-level summaries (:func:`summarize`) of every non-empty split. With ``mask_id`` the model is a
    masked one: each question is asked with its answer tokens replaced by ``mask_id`` (and the
    ``_first`` entries are left out)."""
    out = {}
    for name, data in splits.items():
        if len(data) == 0:
            continue
        inputs = None if mask_id is None else data.tokens.masked_fill(data.answer, mask_id)
        lp = answer_logprobs(model, data, batch_size, inputs=inputs)
        out.update(summarize(lp, name, first=mask_id is None))
    return out


def evaluate_seeds(ens: Stacked, splits: Sequence[dict[str, SeqData]]) -> list[dict[str, float]]:
    """:func:`evaluate` of every seed (``splits[s]`` is seed ``s``'s dict)."""
    out = [{} for _ in splits]
    for name in splits[0]:
        parts = [sp[name] for sp in splits]
        if len(parts[0]) == 0:
            continue
        if any(p.tokens.shape != parts[0].tokens.shape for p in parts):
            raise ValueError(f"split {name!r} must have the same shape for every seed")
        lp = answer_logprobs(ens, (torch.stack([p.tokens for p in parts]), torch.stack([p.answer for p in parts])))
        for s in range(len(splits)):
            out[s].update(summarize({k: v[s] for k, v in lp.items()}, name))
    return out


@torch.no_grad()
def score_matrix(model: torch.nn.Module, prefixes: torch.Tensor, answers: torch.Tensor, score: str = "logit",
                 batch_size: int = 4096) -> torch.Tensor:
    """``[n, m]`` matrix: how strongly the model continues prefix ``i`` with answer entity ``j``.

    ``score="logit"``: the next-token logit of the first token of answer ``j`` after prefix ``i`` (what the
    original heat-maps show). ``score="logprob"``: ``log p(answer j | prefix i)`` summed over all its tokens
    (teacher forcing), which is the right score for entities longer than one token.
    """
    if score not in ("logit", "logprob"):
        raise ValueError(f"score={score!r} is not allowed: expected 'logit' or 'logprob'")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prefixes, answers = prefixes.to(device), answers.to(device)
    n, m = len(prefixes), len(answers)
    if score == "logit":
        out = model(prefixes)[:, -1, :].float()[:, answers[:, 0]]
    else:
        P = prefixes.shape[1]
        rows = torch.cat([prefixes.repeat_interleave(m, 0), answers.repeat(n, 1)], dim=1)   # [n*m, P+k]
        answer = torch.zeros_like(rows, dtype=torch.bool)
        answer[:, P:] = True
        out = answer_logprobs(model, (rows, answer), batch_size)["whole"].view(n, m)
    model.train(was_training)
    return out.cpu()


def diagonal_accuracy(matrix: torch.Tensor) -> float:
    """Fraction of rows whose largest entry is on the diagonal (ties count as misses)."""
    M = torch.as_tensor(matrix)
    diag = M.diagonal()
    others = M.clone()
    others.fill_diagonal_(float("-inf"))
    return (diag > others.max(1).values).float().mean().item()
