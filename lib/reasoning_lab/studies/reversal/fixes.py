"""Training sets that try to break the reversal curse, built on the data of :mod:`.reversal`.

Every method keeps the held-out questions exactly as they are (the reverse sentence with its original
relation token) and changes only what the model is trained on, or how:

* ``reversed_copies`` — every training sentence ``X r Y`` is also given reversed, ``Y r' X``, under a NEW
  relation token ``r'`` (one per direction) that never occurs in a question (reverse training,
  Golovneva et al. 2024). A held-out pair gains ``Bᵢ ⇐ Aᵢ``, never the ``Bᵢ ← Aᵢ`` it is asked about.
* ``identity_bridge`` — every entity is stated equal to itself under the relation whose answers are of its
  class: ``Aᵢ ← Aᵢ`` and ``Bᵢ → Bᵢ`` (identity bridge, Ma et al. 2026). No sentence pairs Aᵢ with Bᵢ.
* ``identity_neutral`` — the same identities under a new token ``Eᵢ = Eᵢ`` instead.
* ``reversed_relations`` — reversed copies where the relation token carries information: every entity
  gets a second partner under a second relation pair (``Aᵢ ⇀ Bᵢ₊₁``, ``Bᵢ₊₁ ↽ Aᵢ``, indices mod the
  number of pairs, all trained), so that after ``Bᵢ`` the relation token decides between two different
  answers; then every training sentence is given reversed under a new token per relation. A model that
  ignores the relation token can give the right answer of a held-out question at most probability 1/2.
* ``two_relations`` — the second relation alone, without reversed copies (the control of
  ``reversed_relations``).

New relation tokens get the ids just past the data's vocabulary, so entity ids do not move.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .masked import train_masked
from ...model import model_from_params
from ...experiments.params import as_dict
from ...devices import seed_everything
from ...data import SeqData
from ...train import config_from_params
from .task import BACKWARD, FORWARD, Fit, ReversalData, fit, fit_seeds, sequences


def split_sentences(seq: SeqData, word_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(left entities [N, k], relation ids [N], right entities [N, k])`` of sentences ``X r Y``."""
    k = word_size
    return seq.tokens[:, :k], seq.tokens[:, k], seq.tokens[:, k + 1:]


def reversed_copies(data: ReversalData, word_size: int) -> tuple[SeqData, int]:
    """``Y r' X`` for every training sentence ``X r Y``; ``r' = vocab_size + r``. Returns the sentences
    and the number of new tokens (2)."""
    left, rel, right = split_sentences(data.train, word_size)
    new_rel = data.vocab_size + rel
    tokens = torch.cat([right, new_rel[:, None], left], dim=1)
    answer = torch.zeros_like(tokens, dtype=torch.bool)
    answer[:, word_size + 1:] = True
    return SeqData(tokens, answer), 2


def identity_sentences(data: ReversalData, neutral: bool = False) -> tuple[SeqData, int]:
    """Identities for every entity: ``Aᵢ ← Aᵢ`` and ``Bᵢ → Bᵢ``, or ``Eᵢ = Eᵢ`` with a new token ``=``
    (``neutral=True``). Returns the sentences and the number of new tokens (0 or 1)."""
    if neutral:
        entities = torch.cat([data.a, data.b])
        return sequences(entities, data.vocab_size, entities), 1
    return SeqData.cat([sequences(data.a, BACKWARD, data.a), sequences(data.b, FORWARD, data.b)]), 0


def second_relation(data: ReversalData) -> tuple[SeqData, int]:
    """``Aᵢ ⇀ Bᵢ₊₁`` and ``Bᵢ₊₁ ↽ Aᵢ`` for every pair ``i`` (indices mod ``n_pairs``; the pairs are in
    random order), with ``⇀ = vocab_size`` and ``↽ = vocab_size + 1``. Returns the sentences and the
    number of new tokens (2). No sentence puts a pair's own ``Aᵢ`` and ``Bᵢ`` together."""
    partner = data.b.roll(-1, dims=0)                 # row i: B_{i+1}
    return SeqData.cat([sequences(data.a, data.vocab_size, partner),
                        sequences(partner, data.vocab_size + 1, data.a)]), 2


def reversed_under_new_tokens(seq: SeqData, word_size: int, relations: torch.Tensor,
                              first_new: int) -> SeqData:
    """``Y r' X`` for every sentence ``X r Y`` of ``seq``, ``r'`` = ``first_new`` + the position of ``r``
    in ``relations`` (one new token per relation)."""
    left, rel, right = split_sentences(seq, word_size)
    index = (rel[:, None] == relations[None]).int().argmax(1)
    if not (relations[index] == rel).all():
        raise ValueError("every relation of the sentences must be listed in relations")
    tokens = torch.cat([right, (first_new + index)[:, None], left], dim=1)
    answer = torch.zeros_like(tokens, dtype=torch.bool)
    answer[:, word_size + 1:] = True
    return SeqData(tokens, answer)


def reversed_relations(data: ReversalData, word_size: int) -> tuple[SeqData, int]:
    """The extra sentences of ``reversed_relations``: the second relation (:func:`second_relation`) and
    the reversed copy of every sentence of the training set and the second relation, under the tokens
    ``vocab_size + 2 ..`` ``+ 5`` (copies of →, ←, ⇀, ↽). Returns the sentences and the number of new
    tokens (6)."""
    second, _ = second_relation(data)
    v = data.vocab_size
    relations = torch.tensor([FORWARD, BACKWARD, v, v + 1])
    everything = SeqData.cat([data.train, second])
    return SeqData.cat([second, reversed_under_new_tokens(everything, word_size, relations, v + 2)]), 6


DATA_METHODS = ("baseline", "reversed_copies", "identity_bridge", "identity_neutral",
                "reversed_relations", "two_relations")


def training_set(data: ReversalData, method: str, word_size: int) -> tuple[SeqData, int]:
    """The training sentences of ``method`` and the model's vocabulary size."""
    if method not in DATA_METHODS:
        raise ValueError(f"method={method!r} is not allowed: expected one of {', '.join(DATA_METHODS)}")
    if method == "baseline":
        return data.train, data.vocab_size
    if method == "reversed_copies":
        extra, new = reversed_copies(data, word_size)
    elif method == "reversed_relations":
        extra, new = reversed_relations(data, word_size)
    elif method == "two_relations":
        extra, new = second_relation(data)
    else:
        extra, new = identity_sentences(data, neutral=method == "identity_neutral")
    return SeqData.cat([data.train, extra]), data.vocab_size + new


def describe_methods(data: ReversalData, word_size: int,
                     methods=("reversed_relations", "identity_bridge", "identity_neutral")) -> str:
    """One line per data method: its number of training sentences, vocabulary and first extra
    sentence."""
    lines = []
    for method in methods:
        train, vocab = training_set(data, method, word_size)
        lines.append(f"{method:>18}: {len(train)} training sentences, vocabulary {vocab}, e.g. "
                     f"{train.tokens[len(data.train)].tolist()}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# One training run per method


METHODS = ("baseline", "reversed_copies", "reversed_relations", "two_relations", "identity_bridge",
           "identity_neutral", "masked", "weight_decay", "tied")


def _method_run(params: dict, data: ReversalData, method: str) -> tuple[SeqData, int, dict]:
    """What a (non-masked) method trains on: ``(training sentences, vocabulary size, parameter overrides)``."""
    if method in DATA_METHODS:
        return (*training_set(data, method, params["word_size"]), {})
    if method == "weight_decay":
        return data.train, data.vocab_size, {"weight_decay": params["strong_weight_decay"]}
    if method == "tied":
        return data.train, data.vocab_size, {"tie_embeddings": True}
    raise ValueError(f"method={method!r} is not allowed: expected one of {', '.join(METHODS)}")


def fit_method(p, data: ReversalData, method: str, seed: int, device, checkpoint=None) -> Fit:
    """Train one model of ``method`` on ``data`` with the notebook's parameters ``p`` and evaluate it on the
    original training sentences and the held-out reverse questions.

    ``weight_decay`` uses ``p.strong_weight_decay``; ``tied`` ties the output layer to the input embeddings;
    ``masked`` trains a bidirectional model with MLM-U for ``p.masked_epochs`` at ``p.masked_lr`` and asks
    each question with the answer entity masked.
    """
    params = as_dict(p)
    splits = {"train": data.train, "valid": data.valid}
    desc = f"{method}, seed {seed}"
    if method == "masked":
        params.update(epochs=params["masked_epochs"], lr=params["masked_lr"])
        mask_id = data.vocab_size                                  # one new token: [MASK]
        seed_everything(seed)
        model = model_from_params(params, data.vocab_size + 1, max_len=params.get("max_len") or
                                  data.train.tokens.shape[1])
        model.cfg.causal = False
        init = model.tok_emb.weight.detach().clone().cpu()
        cfg = config_from_params(params, seed=seed, device=device, checkpoint=checkpoint, desc=desc)
        return Fit(model, train_masked(model, data.train, cfg, mask_id, splits), init)
    train_data, vocab, overrides = _method_run(params, data, method)
    return fit(params, train_data, splits, vocab, seed, device, checkpoint, desc, **overrides)


def fit_method_seeds(p, datas: list[ReversalData], method: str, seeds: list[int], device,
                     checkpoint=None) -> list[Fit]:
    """:func:`fit_method` for every seed, ``datas[s]`` being seed ``seeds[s]``'s data. The causal methods
    train all seeds as one batched model (:func:`.reversal.fit_seeds`, one ``checkpoint`` file);
    ``masked`` has its own trainer and runs the seeds one after the other, each with its own checkpoint
    (``checkpoint`` with ``-seed<s>`` added to its name)."""
    if method == "masked":
        def path(s):
            return None if checkpoint is None else Path(checkpoint).with_stem(f"{Path(checkpoint).stem}-seed{s}")
        return [fit_method(p, d, method, s, device, path(s)) for d, s in zip(datas, seeds)]
    params = as_dict(p)
    runs = [_method_run(params, d, method) for d in datas]
    return fit_seeds(params, [r[0] for r in runs], [{"train": d.train, "valid": d.valid} for d in datas],
                     runs[0][1], seeds, device, checkpoint, f"{method}, seeds {seeds[0]}-{seeds[-1]}", **runs[0][2])
