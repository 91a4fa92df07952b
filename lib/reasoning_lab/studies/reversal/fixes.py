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

from ...data import SeqData
from ...devices import seed_everything
from ...epochs import epoch_loop, seed_runs
from ...model import model_from_params
from ...train import Trained, no_checkpoints
from .masked import train_masked
from .task import BACKWARD, FORWARD, ReversalData, sequences


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


def _method_overrides(p: dict, method: str) -> dict:
    """The parameters a (non-masked, non-data) method changes."""
    if method in DATA_METHODS:
        return {}
    if method == "weight_decay":
        return {"weight_decay": p["strong_weight_decay"]}
    if method == "tied":
        return {"tie_embeddings": True}
    raise ValueError(f"method={method!r} is not allowed: expected one of {', '.join(METHODS)}")


def train_method(p: dict, make_data, method: str, device, checkpoint=None, hooks=(), loop=None) -> Trained:
    """Train the seeds of one method on the chapter's data (``make_data(seed)``), evaluated on the
    original training sentences and the held-out reverse questions.

    The causal methods train all seeds as one batched model (:func:`reasoning_lab.epochs.seed_runs`,
    one ``checkpoint`` file): a data method on its own training set (:func:`training_set`),
    ``weight_decay`` with ``p["strong_weight_decay"]``, ``tied`` with the output layer tied to the input
    embeddings. ``masked`` trains bidirectional models with MLM-U for ``p["masked_epochs"]`` at
    ``p["masked_lr"]``, one seed after the other (each with its own checkpoint, ``-seed<s>`` added to
    the name), and asks each question with the answer entity masked."""
    desc = f"{method}, seeds {p['seed']}-{p['seed'] + p['seeds'] - 1}"
    if method != "masked":
        if method in DATA_METHODS:
            vocab = training_set(make_data(p["seed"]), method, p["word_size"])[1]
            return seed_runs(p, make_data, device, checkpoint, hooks=hooks, loop=loop, desc=desc,
                             train_on=lambda d: training_set(d, method, p["word_size"])[0], vocab_size=vocab)
        return seed_runs(p, make_data, device, checkpoint, hooks=hooks, loop=loop, desc=desc,
                         **_method_overrides(p, method))
    params = {**p, "epochs": p["masked_epochs"], "lr": p["masked_lr"]}
    models, histories, sets = [], [], []
    for s in range(p["seed"], p["seed"] + p["seeds"]):
        data = make_data(s)
        mask_id = data.vocab_size                                  # one new token: [MASK]
        seed_everything(s)
        model = model_from_params(params, data.vocab_size + 1, max_len=p.get("max_len") or
                                  data.train.tokens.shape[1])
        model.cfg.causal = False
        path = None if checkpoint is None else Path(checkpoint).with_stem(f"{Path(checkpoint).stem}-seed{s}")
        cfg = epoch_loop(params, len(data.train), device, path, desc=f"masked, seed {s}", **(loop or {}))
        histories.append(train_masked(model, data.train, cfg, p["batch_size"], s, mask_id,
                                      {"train": data.train, "valid": data.valid}, hooks=hooks))
        models.append(model)
        sets.append(data)
    return Trained(models, histories, {}, data=sets)


def train_methods(p: dict, make_data, device, checkpoint=no_checkpoints, hooks=(), loop=None) -> dict[str, Trained]:
    """:func:`train_method` for every method of ``p["methods"]`` (checkpoint ``<method>-seeds``)."""
    return {m: train_method(p, make_data, m, device, checkpoint(f"{m}-seeds"), hooks, loop) for m in p["methods"]}
