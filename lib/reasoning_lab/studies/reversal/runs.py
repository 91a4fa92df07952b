"""The set-up sequence the reversal and chain chapters share: one data set per seed, all seeds trained
side by side (:func:`.task.fit_seeds`), optional frames of the first seed for a training player, and
the training schedule of the reversal-curse defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ...experiments.params import as_dict
from .task import Fit, fit_seeds

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
# :func:`seed_runs` as the notebook calls it.
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


@dataclass
class SeedRuns:
    """The data sets, fits and recorded frames of one chapter's seeds (first seed first)."""
    sets: list
    fits: list[Fit]
    frames: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def data(self):
        return self.sets[0]

    @property
    def model(self):
        return self.fits[0].model

    @property
    def models(self) -> list:
        return [f.model for f in self.fits]

    @property
    def histories(self) -> list:
        return [f.history for f in self.fits]

    def mean_last(self, *keys: str) -> dict[str, float]:
        """``{key: mean over seeds of the key's last recorded value}`` (default keys: the final
        probabilities, losses and held-out accuracy, :data:`FINAL_KEYS`)."""
        keys = keys or FINAL_KEYS
        return {k: float(np.mean([h.last(k) for h in self.histories])) for k in keys}


def seed_runs(p, make_data: Callable[[int], Any], device, checkpoint=None,
              extra_splits: Callable[[Any], dict] | None = None,
              record: Callable[[Any, Any], Any] | None = None, n_frames: int = 15,
              **overrides) -> SeedRuns:
    """Train the seeds ``p.seed .. p.seed + p.seeds - 1``: seed ``s`` on ``make_data(s)`` (an object
    with ``train``, ``valid`` and ``vocab_size``), evaluated on its ``train`` and ``valid`` sentences
    and on ``extra_splits(data)``. ``record(model, data)``, if given, is stored with the epoch about
    ``n_frames`` times during training, for the first seed (``SeedRuns.frames``). ``overrides`` replace
    parameters (e.g. ``epochs``)."""
    params = as_dict(p, **overrides)
    if params["seeds"] < 1:
        raise ValueError(f"parameter seeds={params['seeds']} is not allowed: expected at least 1")
    seeds = list(range(params["seed"], params["seed"] + params["seeds"]))
    sets = [make_data(s) for s in seeds]
    splits = [{"train": d.train, "valid": d.valid, **(extra_splits(d) if extra_splits else {})}
              for d in sets]
    frames: list = []
    snapshot = None if record is None else (lambda m, e: frames.append((e, record(m, sets[0]))))
    fits = fit_seeds(params, [d.train for d in sets], splits, sets[0].vocab_size, seeds,
                     device=device, checkpoint=checkpoint, desc=f"seeds {seeds[0]}-{seeds[-1]}",
                     snapshot=snapshot, snapshot_every=max(1, params["epochs"] // n_frames))
    return SeedRuns(sets, fits, frames)
