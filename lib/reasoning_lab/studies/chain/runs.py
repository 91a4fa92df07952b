"""The training run of each chain experiment, defined once (data -> models -> optimiser settings -> the one
loop through :func:`reasoning_lab.epochs.seed_runs` -> checkpoints -> the metrics the run determines);
every entrance trains through these functions (``Experiment.train``). Arguments and result as in
:mod:`reasoning_lab.studies.reversal.runs`."""
from __future__ import annotations

import numpy as np

from ...epochs import seed_runs
from ...train import Trained, no_checkpoints
from . import task as chain


def step_splits(data: chain.ChainData) -> dict:
    """The two single steps of the held-out triples, ``A → B`` and ``B → C``, as evaluation splits."""
    return {"step1": data.sentences("ab", data.valid_triples),
            "step2": data.sentences("bc", data.valid_triples)}


def unused_split(data: chain.RelatedChainData) -> dict:
    """``x j ↝ z j`` for the pool's index tokens that occur in no sentence (empty when none is left)."""
    return {"unused": data.sentences("ac", data.unused)} if len(data.unused) else {}


def seed_table(models, datasets, histories) -> dict[str, list[float]]:
    """Per seed, on the held-out triples: the direct and two-step probabilities and accuracies, and the
    two steps alone (:func:`.task.two_step_metrics`; the direct accuracy from the training history)."""
    table: dict[str, list[float]] = {k: [] for k in ("direct", "two_step", "step1", "step2", "direct_acc",
                                                     "two_step_acc")}
    for model, data, history in zip(models, datasets, histories):
        m = chain.two_step_metrics(model, data)
        for key, value in (("direct", m["valid_direct_prob"]), ("two_step", m["valid_two_step_prob"]),
                           ("step1", m["valid_step1_prob"]), ("step2", m["valid_step2_prob"]),
                           ("direct_acc", history.last("valid_acc")),
                           ("two_step_acc", m["valid_two_step_acc"])):
            table[key].append(value)
    return table


def chain_run(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``chain-of-thought``: the chapter's seeds on ``A → B``, ``B → C`` and the trained ``A ↝ C``; the two
    steps of the held-out triples evaluated along; frames of their logit maps for the player.
    ``extra["table"]``: the per-seed held-out table (:func:`seed_table`)."""
    make = lambda s: chain.make_chain_data(p["vocab_size"], p["word_size"], seed=s,
                                           held_out_fraction=p["held_out_fraction"])
    t = seed_runs(p, make, device, checkpoint("seeds"), extra_splits=step_splits, hooks=hooks, loop=loop,
                  record=lambda model, d: chain.logit_maps(model, d, d.valid_triples, "query"))
    table = seed_table(t.models, t.data, t.histories)
    mean = {k: float(np.mean(v)) for k, v in table.items()}
    t.extra.update(table=table, mean=mean)
    t.metrics = {**t.mean_last("train_prob"), "valid_prob": mean["direct"],
                 "valid_two_step_prob": mean["two_step"], "chance_prob": t.data[0].chance_prob,
                 "valid_acc": mean["direct_acc"], "valid_two_step_acc": mean["two_step_acc"],
                 "valid_step1_prob": mean["step1"], "valid_step2_prob": mean["step2"],
                 **t.mean_last("train_nll", "valid_nll"), "params": t.model.num_params()}
    return t


def related(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``chain-related-tokens``: the chapter's seeds on chains of entities that share an index token;
    never-used index tokens evaluated along where the pool has any."""
    make = lambda s: chain.make_related_chain_data(p["vocab_size"], p["id_pool"], p["n_train"], p["n_valid"],
                                                   seed=s)
    t = seed_runs(p, make, device, checkpoint("seeds"), extra_splits=unused_split, hooks=hooks, loop=loop)
    unused = t.mean_last("unused_prob") if "unused_prob" in t.history else {}
    t.metrics = {**t.mean_last("train_prob", "valid_prob", "valid_prob_first", "valid_acc"),
                 "chance_prob": t.data[0].chance_prob, **unused, "params": t.model.num_params()}
    return t
