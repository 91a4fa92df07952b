"""Token data for the language-model studies: equal-length rows and a mask of the answer tokens, and the
entity words and ``left relation right`` sentences that the reversal and chain studies build them from."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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


def loss_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The True positions of each row of ``mask`` [N, P], in order, left-aligned: ``(index, weight)``, both
    [N, K] with K the largest count in a row (at least 1); padding entries have weight False."""
    k = max(1, int(mask.sum(1).max())) if mask.shape[0] else 1
    index = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    return index, mask.gather(1, index)


@dataclass
class TaskData:
    """A study's training and held-out sentences and its model vocabulary; ``chance_prob`` is a uniform
    guess over the ``n_answers`` entities that can fill the answer slot (each study says which)."""

    train: SeqData
    valid: SeqData
    vocab_size: int                 # model vocabulary: relation tokens + entity token range

    @property
    def n_answers(self) -> int:
        raise NotImplementedError

    @property
    def chance_prob(self) -> float:
        return 1.0 / self.n_answers


def entity_alphabets(vocab_size: int, n_classes: int, generator: torch.Generator,
                     first_id: int) -> list[torch.Tensor]:
    """``n_classes`` disjoint random alphabets of ``vocab_size // 4`` token ids each, taken from
    ``first_id .. first_id + vocab_size - 1`` (the ids below are the relation tokens)."""
    alphabet = vocab_size // 4
    if alphabet < 2:
        raise ValueError(f"parameter vocab_size={vocab_size} is not allowed: expected at least 8")
    ids = torch.randperm(vocab_size, generator=generator)[: n_classes * alphabet] + first_id
    return list(ids.split(alphabet))


def entity_words(alphabet: torch.Tensor, word_size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct words of ``word_size`` tokens from ``alphabet``, drawn uniformly without replacement."""
    size = len(alphabet)
    total = size ** word_size
    if total <= 10_000_000:  # enumerate the word space and shuffle it
        codes = torch.randperm(total, generator=generator)[:n]
    else:  # sample codes, keep the first occurrence of each, repeat until n are distinct
        codes = torch.empty(0, dtype=torch.long)
        while len(codes) < n:
            merged = torch.cat([codes, torch.randint(total, (2 * n,), generator=generator)])
            order = torch.argsort(merged, stable=True)
            first = torch.ones(len(merged), dtype=torch.bool)
            first[1:] = merged[order][1:] != merged[order][:-1]
            keep = torch.zeros(len(merged), dtype=torch.bool)
            keep[order[first]] = True
            codes = merged[keep][:n]
    digits = torch.stack([(codes // size ** i) % size for i in reversed(range(word_size))], dim=1)
    return alphabet[digits]


def sequences(left: torch.Tensor, relation: int, right: torch.Tensor) -> SeqData:
    """Rows ``left relation right`` with the ``right`` entity as the answer."""
    n, k = left.shape
    rel = torch.full((n, 1), relation, dtype=torch.long)
    tokens = torch.cat([left, rel, right], dim=1)
    answer = torch.zeros_like(tokens, dtype=torch.bool)
    answer[:, k + 1:] = True
    return SeqData(tokens, answer)
