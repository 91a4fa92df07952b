r"""How many bits a profile dataset holds, and how many of them a model has provably stored.

**Per-subject entropy.** For subject $s$ (an attribute or a relation) $H_s = \log_2(\#\text{distinct values of } s
\text{ in the dataset})$ bits per answer: the values are uniform draws, and a model that knows which values
occur (but nothing else) pays $H_s$ per answer. Under the ``independent`` scheme a relation answer may be
any of the $M$ possible names ($H = \log_2 M$) and a birth date any of the $D$ possible dates.

**Selection terms** (one-off costs: *which* names / dates exist), for $n$ items out of $M$ possible:

* ``optimal``      $n\log_2 M - n\log_2 n$  (a set; $\approx\log_2\binom{M}{n} - n\log_2 e$)
* ``enumerate``    $n\log_2 M$              (an ordered list)
* ``independent``  $0$                      (nothing selected; the per-answer entropies grow instead)

The name term uses $n = N$ profiles and $M$ = number of possible full names; the date term uses
$n$ = distinct birth dates and $M = D$ possible dates.

**Dataset entropy (1-hop)** $= N\sum_s H_s + S_\text{name} + S_\text{date}$.

**Capacity** from per-subject mean answer losses $L_s$ (bits, summed over the answer's tokens):
$C = \sum_s N\max(0, H_s - L_s) + f_\text{name} S_\text{name} + f_\text{date} S_\text{date}$, where the fraction
$f = \mathrm{clip}\big((\log_2 M - L)/(\log_2 M - H), 0, 1\big)$ credits a selection term only as far as
the losses of the subjects that reveal it (relations for names, birth date for dates) have moved from
"any possible value" to "a value that occurs". With ``clamp=False`` it is the original's formula,
$N\sum_s(H_s - L_s) + S_\text{name} + S_\text{date}$, which gives an untrained model a large negative value
and credits the selection terms in full. Either way $C \le$ dataset entropy, since $L_s \ge 0$.

**2-hop (incremental, no selection terms).** A 2-hop question's answer is implied by 1-hop facts, so what
a 2-hop loss measures is counted on top of the 1-hop capacity, with $q$ copies of each fact:
``optimal`` $q=1$; ``big-hash`` $q=R$ (every (person, relation, subject) answer memorized separately);
``2-hop-double`` converts the 2-hop loss into a per-hop probability $p_x$ by solving
$p_y = p_x^2 + (1-p_x)/n$ with $n = 2^{H_s}$, $p_y = 2^{-L_s}$, uses $-\log_2 p_x$ as the loss and $q=2$ for
relation subjects. The original also added the selection terms to the 2-hop value and so counted them
twice in its "2.1-hop" sum; here they enter once, in the 1-hop part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .profiles import Profiles
from .vocab import ATTRIBUTES

NAME_SCHEMES = ("optimal", "enumerate", "independent")
TWO_HOP_SCHEMES = ("optimal", "big-hash", "2-hop-double")


def selection_bits(n: int, space: int, scheme: str) -> float:
    """Bits to say which ``n`` of ``space`` possible items exist."""
    if scheme not in NAME_SCHEMES:
        raise ValueError(f"parameter scheme={scheme!r} is not allowed: expected one of {NAME_SCHEMES}")
    if scheme == "independent" or n == 0:
        return 0.0
    if scheme == "enumerate":
        return n * math.log2(space)
    return n * math.log2(space) - n * math.log2(n)


@dataclass
class DatasetEntropy:
    n: int                       # profiles
    subjects: tuple[str, ...]
    H: dict[str, float]          # bits per answer of each subject
    name_selection: float
    date_selection: float
    name_space: int              # possible full names M
    date_space: int              # possible dates D
    scheme: str

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(s for s in self.subjects if s not in ATTRIBUTES)

    @property
    def per_profile(self) -> float:
        return sum(self.H.values())

    @property
    def selection(self) -> float:
        return self.name_selection + self.date_selection

    @property
    def one_hop(self) -> float:
        """Total entropy of the 1-hop facts, selection terms included (bits)."""
        return self.n * self.per_profile + self.selection

    def by_subject(self) -> dict[str, float]:
        """Entropy per subject, each selection term attributed to the subjects that reveal it."""
        out = {s: self.n * h for s, h in self.H.items()}
        out["birth_date"] += self.date_selection
        for r in self.relations:
            out[r] += self.name_selection / len(self.relations)
        return out

    def q(self, subject: str, scheme: str) -> int:
        if scheme not in TWO_HOP_SCHEMES:
            raise ValueError(f"parameter two_hop_scheme={scheme!r} is not allowed: expected one of {TWO_HOP_SCHEMES}")
        if scheme == "big-hash":
            return len(self.relations)
        if scheme == "2-hop-double":
            return 2 if subject in self.relations else 1
        return 1

    def two_hop(self, scheme: str = "big-hash") -> float:
        """Incremental entropy of the 2-hop facts (no selection terms)."""
        return sum(self.q(s, scheme) * self.n * h for s, h in self.H.items())


def subject_entropies(profiles: Profiles, scheme: str = "optimal") -> dict[str, float]:
    """Bits per answer of each subject: log2 of the number of distinct values that occur."""
    v = profiles.vocab
    distinct = lambda x: int(torch.unique(x).numel())
    H = {"birth_date": math.log2(distinct(profiles.date_codes())),
         "birth_city": math.log2(distinct(profiles.birth_city)),
         "university": math.log2(distinct(profiles.university)),
         "employer": math.log2(distinct(profiles.employer))}
    for r, rel in enumerate(profiles.subjects[4:]):
        H[rel] = math.log2(distinct(profiles.relations[:, r]))
    if scheme == "independent":
        H["birth_date"] = math.log2(v.n_dates)
        for rel in profiles.subjects[4:]:
            H[rel] = math.log2(v.n_names)
    return H


def dataset_entropy(profiles: Profiles, scheme: str = "optimal") -> DatasetEntropy:
    v = profiles.vocab
    n = len(profiles)
    n_dates = int(torch.unique(profiles.date_codes()).numel())
    return DatasetEntropy(n=n, subjects=profiles.subjects, H=subject_entropies(profiles, scheme),
                          name_selection=selection_bits(n, v.n_names, scheme),
                          date_selection=selection_bits(n_dates, v.n_dates, scheme),
                          name_space=v.n_names, date_space=v.n_dates, scheme=scheme)


def _credit(pairs: list[tuple[float, float]], high: float) -> float:
    """Mean over (loss, entropy) pairs of how far the loss moved from ``high`` (any possible value) to the
    entropy (a value that occurs), clipped to [0, 1]."""
    if not pairs:
        return 0.0
    return sum(1.0 if high <= h else min(1.0, max(0.0, (high - L) / (high - h))) for L, h in pairs) / len(pairs)


def capacity_by_subject(losses_bits: dict[str, float], ent: DatasetEntropy, clamp: bool = True) -> dict[str, float]:
    """1-hop capacity per subject (bits), each selection term attributed as in ``DatasetEntropy.by_subject``."""
    rels = ent.relations
    out = {}
    for s in ent.subjects:
        term = ent.n * (ent.H[s] - losses_bits[s])
        out[s] = max(0.0, term) if clamp else term
    if clamp:
        name_f = _credit([(losses_bits[r], ent.H[r]) for r in rels], math.log2(ent.name_space))
        date_f = _credit([(losses_bits["birth_date"], ent.H["birth_date"])], math.log2(ent.date_space))
    else:
        name_f = date_f = 1.0
    out["birth_date"] += date_f * ent.date_selection
    for r in rels:
        out[r] += name_f * ent.name_selection / len(rels)
    return out


def capacity(losses_bits: dict[str, float], ent: DatasetEntropy, clamp: bool = True) -> float:
    """1-hop capacity in bits (selection terms included once)."""
    return sum(capacity_by_subject(losses_bits, ent, clamp).values())


def per_hop_loss(loss_bits: float, entropy_bits: float) -> float:
    """The 2-hop-double inversion: the per-hop loss $-\\log_2 p_x$ with $p_y = p_x^2 + (1-p_x)/n$."""
    n = 2.0 ** entropy_bits
    p_y = 2.0 ** -loss_bits
    if p_y <= 1.0 / n:
        return entropy_bits
    disc = max(0.0, 1.0 / n ** 2 - 4.0 * (1.0 / n - p_y))
    p_x = min(1.0, (1.0 / n + math.sqrt(disc)) / 2.0)
    return -math.log2(p_x)


def two_hop_capacity_by_subject(losses_bits: dict[str, float], ent: DatasetEntropy, scheme: str = "big-hash",
                                clamp: bool = True) -> dict[str, float]:
    """Incremental 2-hop capacity per second subject (bits); ``losses_bits`` are 2-hop losses by subject."""
    out = {}
    for s in ent.subjects:
        if s not in losses_bits:
            continue
        L = per_hop_loss(losses_bits[s], ent.H[s]) if scheme == "2-hop-double" else losses_bits[s]
        term = ent.q(s, scheme) * ent.n * (ent.H[s] - L)
        out[s] = max(0.0, term) if clamp else term
    return out


def two_hop_capacity(losses_bits: dict[str, float], ent: DatasetEntropy, scheme: str = "big-hash",
                     clamp: bool = True) -> float:
    return sum(two_hop_capacity_by_subject(losses_bits, ent, scheme, clamp).values())


def capacity_parts(losses_bits: dict[str, float], ent: DatasetEntropy) -> dict[str, float]:
    """Capacity split into per-person facts, $\\sum_s N\\max(0, H_s - L_s)$, and the credited selection terms
    (which names and dates exist)."""
    facts = sum(max(0.0, ent.n * (ent.H[s] - losses_bits[s])) for s in ent.subjects)
    return {"facts": facts, "selection": capacity(losses_bits, ent) - facts}
