"""Chain data (Zhu et al. 2024, ``train_chain`` and ``train_chain_related_tokens``) and the
chain-of-thought evaluation.

Token ids: ``0`` is the direct relation "→", ``1`` the indirect relation "↝"; entity tokens follow.

*Unrelated entities* (:func:`make_chain_data`). Three disjoint alphabets of ``vocab_size // 4`` tokens
make the A, B and C entities (words of ``word_size`` tokens); triple ``i`` gives the sentences
``Aᵢ → Bᵢ``, ``Bᵢ → Cᵢ`` and ``Aᵢ ↝ Cᵢ``. Training triples put all three sentences in training;
held-out triples put ``Aᵢ → Bᵢ`` and ``Bᵢ → Cᵢ`` in training and ``Aᵢ ↝ Cᵢ`` in validation.

*Related entities* (:func:`make_related_chain_data`). Three fixed class tokens x, y, z and index tokens
``i`` from a pool: the entities are ``x i``, ``y i``, ``z i`` and the sentences ``x i → y i``,
``y i → z i``, ``x i ↝ z i``; the index token of the answer is already in the context.

Chain of thought at inference (:func:`two_step`): the model writes B̂ greedily after ``A →``, then is
scored on C after its own ``B̂ →``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data import SeqData, TaskData, entity_alphabets, entity_words, sequences
from ...evaluate import answer_logprobs, model_device, score_matrix

DIRECT, INDIRECT = 0, 1
N_RELATIONS = 2


def n_chain_triples(vocab_size: int, word_size: int) -> int:
    """Number of triples the unrelated-entity task draws (as in the original: min(#words, 2·alphabet))."""
    alphabet = vocab_size // 4
    return min(alphabet ** word_size, 2 * alphabet)


def n_held_out(n_triples: int, held_out_fraction: float) -> int:
    return int(round(held_out_fraction * n_triples))


class _Triples(TaskData):
    """What both chain tasks share: sentences of one kind for chosen triples, and a chance level over the
    triples' answers. Each task says how its entities are written (``entity``)."""

    KINDS = {"ab": ("a", DIRECT, "b"), "bc": ("b", DIRECT, "c"), "ac": ("a", INDIRECT, "c")}

    @property
    def n_answers(self) -> int:
        return self.n_triples

    def entity(self, which: str, triples: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sentences(self, kind: str, triples: torch.Tensor) -> SeqData:
        """``kind`` = ``"ab"`` (A → B), ``"bc"`` (B → C) or ``"ac"`` (A ↝ C) for the given triples."""
        left, rel, right = self.KINDS[kind]
        return sequences(self.entity(left, triples), rel, self.entity(right, triples))


@dataclass
class ChainData(_Triples):
    # train: A → B and B → C for every triple, A ↝ C for training triples; valid: A ↝ C for held-out ones
    a: torch.Tensor               # [n_triples, word_size]
    b: torch.Tensor
    c: torch.Tensor
    train_triples: torch.Tensor   # indices of triples with A ↝ C in training
    valid_triples: torch.Tensor   # indices of held-out triples

    @property
    def n_triples(self) -> int:
        return self.a.shape[0]

    @property
    def word_size(self) -> int:
        return self.a.shape[1]

    def entity(self, which: str, triples: torch.Tensor) -> torch.Tensor:
        return getattr(self, which)[triples]


def make_chain_data(vocab_size: int = 800, word_size: int = 1, seed: int = 0,
                    held_out_fraction: float = 0.3) -> ChainData:
    g = torch.Generator().manual_seed(seed)
    if vocab_size // 4 < 2:
        raise ValueError(f"parameter vocab_size={vocab_size} is not allowed: expected at least 8")
    n = n_chain_triples(vocab_size, word_size)
    n_valid = n_held_out(n, held_out_fraction)
    if not 1 <= n_valid <= n - 1:
        raise ValueError(f"parameter held_out_fraction={held_out_fraction} is not allowed: it holds out "
                         f"{n_valid} of {n} triples; expected between 1 and {n - 1}")
    a, b, c = (entity_words(al, word_size, n, g) for al in entity_alphabets(vocab_size, 3, g, N_RELATIONS))
    perm = torch.randperm(n, generator=g)
    train_t, valid_t = perm[: n - n_valid].sort().values, perm[n - n_valid:].sort().values
    data = ChainData(None, None, vocab_size + N_RELATIONS, a, b, c, train_t, valid_t)  # type: ignore[arg-type]
    everything = torch.arange(n)
    data.train = SeqData.cat([data.sentences("ab", everything), data.sentences("bc", everything),
                              data.sentences("ac", train_t)])
    data.valid = data.sentences("ac", valid_t)
    return data


@dataclass
class RelatedChainData(_Triples):
    # train: x i → y i and y i → z i for every triple, x i ↝ z i for training triples; valid: x i ↝ z i
    # for held-out ones. The chance level is a guess over the ``z i`` entities that occur in the data.
    x: int                        # the three fixed class tokens
    y: int
    z: int
    index: torch.Tensor           # [n_triples] index token of each triple
    unused: torch.Tensor          # index-pool tokens that occur in no sentence at all
    train_triples: torch.Tensor
    valid_triples: torch.Tensor

    @property
    def n_triples(self) -> int:
        return len(self.index)

    def entity(self, which: str, index: torch.Tensor) -> torch.Tensor:
        """Entity ``x i`` / ``y i`` / ``z i`` (``which`` = a / b / c) for the index tokens ``index``."""
        cls = {"a": self.x, "b": self.y, "c": self.z}[which]
        return torch.stack([torch.full((len(index),), cls), index], 1)


def make_related_chain_data(vocab_size: int = 800, id_pool: int = 600, n_train: int = 200,
                            n_valid: int = 50, seed: int = 0) -> RelatedChainData:
    if id_pool + 3 > vocab_size:
        raise ValueError(f"parameter id_pool={id_pool} is not allowed: expected at most vocab_size - 3 = "
                         f"{vocab_size - 3}")
    if n_train + n_valid > id_pool:
        raise ValueError(f"parameter n_train={n_train} is not allowed: n_train + n_valid must be at most "
                         f"id_pool={id_pool}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(vocab_size, generator=g)[: id_pool + 3] + N_RELATIONS
    x, y, z = (int(t) for t in ids[:3])
    pool = ids[3:]
    n = n_train + n_valid
    index, unused = pool[:n], pool[n:]
    train_t, valid_t = torch.arange(n_train), torch.arange(n_train, n)
    data = RelatedChainData(None, None, vocab_size + N_RELATIONS, x, y, z, index, unused,  # type: ignore[arg-type]
                            train_t, valid_t)
    data.train = SeqData.cat([data.sentences("ab", index), data.sentences("bc", index),
                              data.sentences("ac", index[train_t])])
    data.valid = data.sentences("ac", index[valid_t])
    return data


# ---------------------------------------------------------------------------------------------------
# Evaluation

@torch.no_grad()
def greedy_entity(model: torch.nn.Module, prefix: torch.Tensor, length: int) -> torch.Tensor:
    """Continue each row of ``prefix`` [N, P] by ``length`` argmax tokens (over the whole vocabulary)."""
    was_training = model.training
    model.eval()
    seq = prefix.to(model_device(model))
    for _ in range(length):
        nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    model.train(was_training)
    return seq[:, prefix.shape[1]:].cpu()


def entity_logprob(model: torch.nn.Module, prefix: torch.Tensor, entity: torch.Tensor) -> torch.Tensor:
    """log p(entity | prefix) summed over the entity's tokens, per row: [N] (:func:`answer_logprobs`)."""
    tokens = torch.cat([prefix, entity], 1)
    answer = torch.zeros_like(tokens, dtype=torch.bool)
    answer[:, prefix.shape[1]:] = True
    return answer_logprobs(model, (tokens, answer))["whole"]


def _query(left: torch.Tensor, relation: int) -> torch.Tensor:
    return torch.cat([left, torch.full((len(left), 1), relation, dtype=torch.long)], 1)


@torch.no_grad()
def two_step(model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
    """Chain of thought on triples (a, b, c) [N, k] each: the model writes B̂ after ``A →`` (greedy), then
    answers after its own ``B̂ →``.

    Returns per-triple tensors:

    * ``logp_b``: log p(B | A →), the correct first step;
    * ``b_hat``: the model's greedy B̂;
    * ``logp_c``: log p(C | B̂ →), the correct answer given the model's own first step;
    * ``chain_logp``: ``logp_b + logp_c``; its exponential is the two-step probability;
    * ``c_hat``: the greedy answer after ``B̂ →``; ``correct``: B̂ = B and Ĉ = C;
    * ``direct_logp``: log p(C | A ↝), the direct answer, for comparison.
    """
    k = b.shape[1]
    logp_b = entity_logprob(model, _query(a, DIRECT), b)
    b_hat = greedy_entity(model, _query(a, DIRECT), k)
    logp_c = entity_logprob(model, _query(b_hat, DIRECT), c)
    c_hat = greedy_entity(model, _query(b_hat, DIRECT), c.shape[1])
    correct = (b_hat == b).all(1) & (c_hat == c).all(1)
    direct = entity_logprob(model, _query(a, INDIRECT), c)
    return {"logp_b": logp_b, "b_hat": b_hat, "logp_c": logp_c, "chain_logp": logp_b + logp_c,
            "c_hat": c_hat, "correct": correct, "direct_logp": direct}


def two_step_metrics(model: torch.nn.Module, data: ChainData, triples: torch.Tensor | None = None,
                     prefix: str = "valid") -> dict[str, float]:
    """Split-level summary of :func:`two_step` on ``triples`` (default: the held-out ones).

    ``<prefix>_two_step_prob`` = mean over triples of p(B | A →) · p(C | B̂ →) with B̂ the model's own
    greedy first step; ``<prefix>_two_step_acc`` = fraction with B̂ = B and Ĉ = C; the two factors are
    also reported alone (``_step1_prob``, ``_step2_prob``), next to the direct ``<prefix>_direct_prob``.
    """
    t = data.valid_triples if triples is None else triples
    r = two_step(model, data.a[t], data.b[t], data.c[t])
    return {f"{prefix}_two_step_prob": r["chain_logp"].exp().mean().item(),
            f"{prefix}_two_step_acc": r["correct"].float().mean().item(),
            f"{prefix}_step1_prob": r["logp_b"].exp().mean().item(),
            f"{prefix}_step2_prob": r["logp_c"].exp().mean().item(),
            f"{prefix}_direct_prob": r["direct_logp"].exp().mean().item()}


def logit_maps(model: torch.nn.Module, data: ChainData, triples: torch.Tensor,
               position: str = "query") -> dict[str, torch.Tensor]:
    """The original's three logit matrices for ``triples`` (rows: query entity i, columns: candidate j):
    "B|A", "C|B" and "C|A", each [n, n], on the first token of the candidate entity.

    ``position="query"`` reads the logits after the relation token (``A →``, ``B →``, ``A ↝``: the real
    query). ``position="first"`` reads them at position 0, after the first token alone, as the original
    ``train_chain_logits`` did; there "B|A" and "C|A" are the same output row, only other columns.
    """
    a, b, c = data.a[triples], data.b[triples], data.c[triples]
    if position == "query":
        return {"B|A": score_matrix(model, _query(a, DIRECT), b),
                "C|B": score_matrix(model, _query(b, DIRECT), c),
                "C|A": score_matrix(model, _query(a, INDIRECT), c)}
    if position == "first":
        return {"B|A": score_matrix(model, a[:, :1], b),
                "C|B": score_matrix(model, b[:, :1], c),
                "C|A": score_matrix(model, a[:, :1], c)}
    raise ValueError(f"position={position!r}: expected 'query' or 'first'")
