"""Reversal data as the original experiment builds it (Zhu et al. 2024, ``train_reverse``).

Token ids: ``0`` is the forward relation "→", ``1`` the backward relation "←"; entity tokens follow.
Two disjoint alphabets of ``vocab_size // 4`` tokens each make the A and B entities; an entity is a word of
``word_size`` tokens (Cartesian product of the alphabet, shuffled), and ``n_pairs = min(#words, 2·alphabet)``
pairs (Aᵢ, Bᵢ) are drawn. Sequences are ``Aᵢ → Bᵢ`` and ``Bᵢ ← Aᵢ``. 70% of pairs put both directions in
training; for each remaining pair a fair coin puts one direction in training and holds out the other.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data import SeqData, TaskData, entity_alphabets, entity_words, sequences
from ...evaluate import diagonal_accuracy, score_matrix  # noqa: F401  (rv.diagonal_accuracy)

FORWARD, BACKWARD = 0, 1
N_RELATIONS = 2


@dataclass
class ReversalData(TaskData):
    a: torch.Tensor               # [n_pairs, word_size] token ids of A entities
    b: torch.Tensor               # [n_pairs, word_size] token ids of B entities
    train_pairs: torch.Tensor     # indices of pairs with both directions in training
    valid_pairs: torch.Tensor     # indices of held-out pairs
    valid_forward_seen: torch.Tensor  # [len(valid_pairs)] bool: True if "A → B" was trained, "B ← A" held out

    @property
    def n_pairs(self) -> int:
        return self.a.shape[0]

    @property
    def n_answers(self) -> int:     # any entity of the answer's class
        return self.n_pairs


def make_reversal_data(vocab_size: int = 800, word_size: int = 1, seed: int = 0,
                       train_fraction: float = 0.7) -> ReversalData:
    g = torch.Generator().manual_seed(seed)
    a_alpha, b_alpha = entity_alphabets(vocab_size, 2, g, N_RELATIONS)
    alphabet = len(a_alpha)
    n_pairs = min(alphabet ** word_size, 2 * alphabet)
    a = entity_words(a_alpha, word_size, n_pairs, g)
    b = entity_words(b_alpha, word_size, n_pairs, g)
    perm = torch.randperm(n_pairs, generator=g)
    n_train = int(round(train_fraction * n_pairs))
    train_pairs, valid_pairs = perm[:n_train].sort().values, perm[n_train:].sort().values
    forward_seen = torch.rand(len(valid_pairs), generator=g) < 0.5

    vp_f, vp_b = valid_pairs[forward_seen], valid_pairs[~forward_seen]
    train = SeqData.cat([
        sequences(a[train_pairs], FORWARD, b[train_pairs]),
        sequences(b[train_pairs], BACKWARD, a[train_pairs]),
        sequences(a[vp_f], FORWARD, b[vp_f]),      # seen direction of held-out pairs
        sequences(b[vp_b], BACKWARD, a[vp_b]),
    ])
    valid = SeqData.cat([
        sequences(b[vp_f], BACKWARD, a[vp_f]),     # the reverse of what was seen
        sequences(a[vp_b], FORWARD, b[vp_b]),
    ])
    return ReversalData(train, valid, vocab_size + N_RELATIONS, a, b, train_pairs, valid_pairs, forward_seen)


# ---------------------------------------------------------------------------------------------------
# Probing a trained model: logit heat-maps and embedding geometry


def query_groups(data: ReversalData) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The four query sets of the heat-maps, as ``(query entities [n, k], relation ids [n], answers [n, k])``.

    ``train_forward`` / ``train_backward``: both directions of the pairs trained both ways;
    ``valid_seen``: the trained direction of each held-out pair; ``valid_unseen``: its held-out reverse
    (the validation set). Rows of the two ``valid_*`` groups list the same pairs in the same order: the
    pairs whose forward sentence was trained first, then those whose backward sentence was.
    """
    tp, vp, seen = data.train_pairs, data.valid_pairs, data.valid_forward_seen
    vf, vb = vp[seen], vp[~seen]
    n_f, n_b = len(vf), len(vb)

    def rel(kind: int, n: int) -> torch.Tensor:
        return torch.full((n,), kind, dtype=torch.long)

    return {
        "train_forward": (data.a[tp], rel(FORWARD, len(tp)), data.b[tp]),
        "train_backward": (data.b[tp], rel(BACKWARD, len(tp)), data.a[tp]),
        "valid_seen": (torch.cat([data.a[vf], data.b[vb]]), torch.cat([rel(FORWARD, n_f), rel(BACKWARD, n_b)]),
                       torch.cat([data.b[vf], data.a[vb]])),
        "valid_unseen": (torch.cat([data.b[vf], data.a[vb]]), torch.cat([rel(BACKWARD, n_f), rel(FORWARD, n_b)]),
                         torch.cat([data.a[vf], data.b[vb]])),
    }


def logit_matrices(model: torch.nn.Module, data: ReversalData, view: str = "relation",
                   score: str = "logit") -> dict[str, torch.Tensor]:
    """The four heat-map matrices ``M[i, j]`` = score of answer ``j`` for query ``i`` (diagonal = right answer).

    ``view="relation"`` reads the prediction after ``query entity, relation token`` — the position the loss
    trains and the question the model is asked. ``view="first"`` reproduces the original's heat-maps: the
    prediction at position 0, i.e. after the first token of the query entity alone (no relation token).
    That output conditions on one token and receives no loss when the loss is on the last entity only.
    """
    if view not in ("relation", "first"):
        raise ValueError(f"view={view!r} is not allowed: expected 'relation' or 'first'")
    out = {}
    for name, (query, rel, answer) in query_groups(data).items():
        prefix = torch.cat([query, rel[:, None]], 1) if view == "relation" else query[:, :1]
        out[name] = score_matrix(model, prefix, answer, score)
    return out


def embedding_token_ids(data: ReversalData) -> torch.Tensor:
    """Rows for the cosine map: the two relation tokens, then the A alphabet, then the B alphabet."""
    return torch.cat([torch.tensor([FORWARD, BACKWARD]), torch.unique(data.a), torch.unique(data.b)])


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """``[n, n]`` cosine similarities of the rows of ``vectors`` (zero rows give 0)."""
    v = torch.as_tensor(vectors).detach().float().cpu()
    unit = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    M = torch.as_tensor(matrix)
    return M[~torch.eye(len(M), dtype=torch.bool)]
