"""The training run of each reversal experiment, defined once: data -> models -> optimiser settings ->
the one loop (through :func:`reasoning_lab.epochs.seed_runs`) -> checkpoints -> the metrics the run
determines. The chapters, ``reasoning-lab run``/``train``/``sweep``, the GPU check and the Slurm
template all train through these functions (``Experiment.train``).

Each takes the experiment's validated parameters (a dict), the device, ``checkpoint(name) -> path or
None`` (where the run keeps its checkpoints), fit hooks and ``loop`` overrides (fields of
:class:`reasoning_lab.train.LoopConfig`, e.g. ``bf16`` or ``progress``), and returns a
:class:`reasoning_lab.train.Trained`.
"""
from __future__ import annotations

from ...epochs import seed_runs
from ...train import Trained, no_checkpoints
from .fixes import train_methods
from .in_context import make_reversal_icl_data
from .task import logit_matrices, make_reversal_data

# The training schedule, (epochs, learning rate), with which the reversal-curse defaults (2 layers,
# width 128, batch 64, AdamW) fit every training sentence. One-token entities take the original's
# learning rate 0.01 and 100 epochs with any positional encoding. Longer entities must be told apart by
# the order of their tokens, which at 0.01 trains erratically: in our runs two-token entities ended at
# training probability 0.25 (absolute positions, 100 epochs) and 0.93 (none, 150), three-token ones at
# 0.07 (none, 150). At 0.003 most runs fit, but Adam's loss spikes stay: with three-token entities and
# 200 epochs, absolute positions ended seeds 0 and 1 at 0.14 and 0.77 (both had been above 0.97 twenty
# epochs earlier), no positions dropped seed 0 to 0.09 at epoch 100 and ended seed 2 at 0.989, and which
# seeds spike changes with the CPU (the same runs on another CPU ended seed 0 at 0.991 and 0.995). At
# 0.002 every cell rises smoothly: over seeds 0-2 the lowest training probability at epoch 100 / 160 /
# 200 was 0.995 / 0.998 / 0.999 (word_size 2, absolute), 0.994 / 0.998 / 0.998 (3, absolute), 0.993 /
# 0.997 / 0.998 (3, none) and 0.995 / 0.998 / 0.999 (3, rotary), and 0.998 at epoch 150 with two-token
# entities and no or rotary positions; the held-out probability stayed below 4e-6 (chance 0.0025). 150
# epochs leave a margin. tests/test_reversal_grid.py checks every other cell (tests/expectations.py the
# default one): training probability >= 0.99 and held-out probability <= chance, one seed, through
# :func:`curse`, the run the chapter trains.
CURSE_SCHEDULE = {1: {"none": (100, 0.01), "absolute": (100, 0.01), "rotary": (100, 0.01)},
                  2: {"none": (150, 0.002), "absolute": (150, 0.002), "rotary": (150, 0.002)},
                  3: {"none": (150, 0.002), "absolute": (150, 0.002), "rotary": (150, 0.002)}}


def curse_schedule(word_size: int, pos_encoding: str, epochs: int = 0,
                   lr: float = 0.0) -> tuple[int, float]:
    """``(epochs, lr)`` of a reversal-curse run: the values given when positive, else those of
    :data:`CURSE_SCHEDULE` for the entity length and the positional encoding."""
    if word_size not in CURSE_SCHEDULE:
        raise ValueError(f"parameter word_size={word_size} is not allowed: expected 1, 2 or 3")
    row = CURSE_SCHEDULE[word_size]
    if pos_encoding not in row:
        raise ValueError(f"parameter pos_encoding={pos_encoding!r} is not allowed: expected one of "
                         f"{', '.join(row)}")
    auto_epochs, auto_lr = row[pos_encoding]
    return (int(epochs) if epochs else auto_epochs), (float(lr) if lr else auto_lr)


FINAL_KEYS = ("train_prob", "valid_prob", "train_nll", "valid_nll", "valid_acc")


def curse(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``reversal-curse``: the chapter's seeds on the reversal data, epochs and learning rate from
    :func:`curse_schedule`, frames of the relation-token logits for the player."""
    epochs, lr = curse_schedule(p["word_size"], p["pos_encoding"], p["epochs"], p["lr"])
    t = seed_runs(p, lambda s: make_reversal_data(p["vocab_size"], p["word_size"], seed=s), device,
                  checkpoint("seeds"), record=lambda model, d: logit_matrices(model, d, view="relation"),
                  hooks=hooks, loop=loop, epochs=epochs, lr=lr)
    t.metrics = {**t.mean_last(*FINAL_KEYS), "chance_prob": t.data[0].chance_prob, "params": t.model.num_params()}
    return t


def in_context(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``reversal-in-context``: the chapter's seeds on sentences that state the fact before the question."""
    t = seed_runs(p, lambda s: make_reversal_icl_data(p["vocab_size"], p["n_a"], p["n_b"], seed=s), device,
                  checkpoint("seeds"), hooks=hooks, loop=loop)
    t.metrics = {**t.mean_last(*FINAL_KEYS), "chance_prob": t.data[0].chance_prob, "params": t.model.num_params()}
    return t


def fixes(p: dict, device, checkpoint=no_checkpoints, hooks=(), **loop) -> Trained:
    """``reversal-fixes``: every method of ``p["methods"]`` on the same seeds' data. ``models`` and
    ``histories`` are the baseline's; ``extra["methods"]`` maps each method to its own run."""
    runs = train_methods(p, lambda s: make_reversal_data(p["vocab_size"], p["word_size"], seed=s), device,
                         checkpoint, hooks, loop)
    base = runs["baseline"]
    metrics = {"chance_prob": base.data[0].chance_prob}
    for split in ("train", "valid"):
        metrics.update({f"{split}_prob_{m}": r.mean_last(f"{split}_prob")[f"{split}_prob"] for m, r in runs.items()})
    return Trained(base.models, base.histories, metrics, data=base.data, extra={"methods": runs})
