"""Questions about profiles, pre-tokenized: the training stream is integer tensors, strings are for display.

* 1-hop ``What was {name}'s {subject}?``            tokens ``[first middle last subject | answer]``
* 2-hop ``What was {name}'s {relation}'s {subject}?`` tokens ``[first middle last relation subject | answer]``

The subject is one of the 4 attributes or one of the R relations (K = 4 + R subjects). An answer is one
token (city, university, employer), three tokens (a date: year, month, day) or a full name (three
tokens). Rows have the fixed length 8 (1-hop rows end with one padding token); ``answer`` marks the answer
tokens, and the loss of a question is the sum of its answer-token losses, as in the original.

Every 1-hop fact is trained. 2-hop questions are held out as the original defines it: 2% of the people as
first person, one relation as first hop, 2% of the (person, relation) pairs, 2% of the people as bridge,
one second subject, 2% of the (bridge, subject) pairs and 10% of the complete (person, relation, subject)
triples; each of these is an evaluation set of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data import SeqData
from .profiles import Profiles

ANSWER_LEN = 3
SEQ_LEN = 3 + 1 + 1 + ANSWER_LEN          # name, relation, subject, answer
HELDOUT_SETS = ("first_people", "relation", "person_relation", "bridge_people", "second_subject",
                "bridge_subject", "triples")


@dataclass
class Batch:
    tokens: torch.Tensor    # [B, SEQ_LEN]
    answer: torch.Tensor    # [B, SEQ_LEN] bool
    subject: torch.Tensor   # [B] subject index (0..K-1) of the asked-for value
    hops: torch.Tensor      # [B] 1 or 2

    def seqdata(self) -> SeqData:
        return SeqData(self.tokens, self.answer)

    def to(self, device) -> "Batch":
        return Batch(self.tokens.to(device), self.answer.to(device), self.subject.to(device), self.hops.to(device))

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass
class HeldOut:
    first_people: torch.Tensor     # [N] bool
    relation: int
    person_relation: torch.Tensor  # [N, R] bool
    bridge_people: torch.Tensor    # [N] bool
    second_subject: int
    bridge_subject: torch.Tensor   # [N, K] bool
    triples: torch.Tensor          # [N, R, K] bool

    def membership(self, p, r, s, b) -> dict[str, torch.Tensor]:
        """For 2-hop triples (p, r, s) with bridge b: which held-out sets each one belongs to."""
        return {"first_people": self.first_people[p], "relation": r == self.relation,
                "person_relation": self.person_relation[p, r], "bridge_people": self.bridge_people[b],
                "second_subject": s == self.second_subject, "bridge_subject": self.bridge_subject[b, s],
                "triples": self.triples[p, r, s]}


def _fraction_mask(shape, fraction: float, g: torch.Generator) -> torch.Tensor:
    total = 1
    for d in shape:
        total *= d
    mask = torch.zeros(total, dtype=torch.bool)
    mask[torch.randperm(total, generator=g)[: int(fraction * total)]] = True
    return mask.view(*shape)


def make_heldout(n: int, n_relations: int, n_subjects: int, seed: int, people: float = 0.02,
                 triples: float = 0.1) -> HeldOut:
    g = torch.Generator().manual_seed(seed + 7919)
    return HeldOut(first_people=_fraction_mask((n,), people, g),
                   relation=int(torch.randint(n_relations, (1,), generator=g)),
                   person_relation=_fraction_mask((n, n_relations), people, g),
                   bridge_people=_fraction_mask((n,), people, g),
                   second_subject=int(torch.randint(n_subjects, (1,), generator=g)),
                   bridge_subject=_fraction_mask((n, n_subjects), people, g),
                   triples=_fraction_mask((n, n_relations, n_subjects), triples, g))


class QuestionBank:
    """Pre-tokenized answers of every (profile, subject) and vectorized question sampling."""

    def __init__(self, profiles: Profiles, seed: int = 0):
        self.profiles = profiles
        v = profiles.vocab
        n, R = len(profiles), profiles.n_relations
        self.n, self.n_relations = n, R
        self.subjects = profiles.subjects
        self.K = len(self.subjects)
        self.names = profiles.name_tokens()                                   # [N, 3]
        o = v.offset
        answers = torch.zeros(n, self.K, ANSWER_LEN, dtype=torch.long)
        answers[:, 0] = profiles.date_tokens()
        for k, attr in enumerate(("birth_city", "university", "employer"), start=1):
            answers[:, k, 0] = getattr(profiles, attr) + o[attr]
        answers[:, 4:] = self.names[profiles.relations]                      # [N, R, 3]
        self.answers = answers
        self.answer_len = torch.tensor([3, 1, 1, 1] + [3] * R)
        self.answer_mask = torch.arange(ANSWER_LEN)[None, :] < self.answer_len[:, None]   # [K, 3]
        self.subject_tokens = torch.arange(self.K) + o["subject"]
        self.heldout = make_heldout(n, R, self.K, seed)

    # --- questions as tensors -----------------------------------------------------------------------
    def one_hop(self, p: torch.Tensor, s: torch.Tensor) -> Batch:
        B = len(p)
        tokens = torch.zeros(B, SEQ_LEN, dtype=torch.long)
        answer = torch.zeros(B, SEQ_LEN, dtype=torch.bool)
        tokens[:, :3] = self.names[p]
        tokens[:, 3] = self.subject_tokens[s]
        tokens[:, 4:4 + ANSWER_LEN] = self.answers[p, s]
        answer[:, 4:4 + ANSWER_LEN] = self.answer_mask[s]
        return Batch(tokens, answer, s, torch.ones(B, dtype=torch.long))

    def two_hop(self, p: torch.Tensor, r: torch.Tensor, s: torch.Tensor) -> Batch:
        B = len(p)
        b = self.profiles.relations[p, r]
        tokens = torch.empty(B, SEQ_LEN, dtype=torch.long)
        answer = torch.zeros(B, SEQ_LEN, dtype=torch.bool)
        tokens[:, :3] = self.names[p]
        tokens[:, 3] = self.subject_tokens[4 + r]
        tokens[:, 4] = self.subject_tokens[s]
        tokens[:, 5:] = self.answers[b, s]
        answer[:, 5:] = self.answer_mask[s]
        return Batch(tokens, answer, s, torch.full((B,), 2, dtype=torch.long))

    def all_one_hop(self) -> Batch:
        """Every 1-hop question once (N·K rows), profile-major."""
        p = torch.arange(self.n).repeat_interleave(self.K)
        s = torch.arange(self.K).repeat(self.n)
        return self.one_hop(p, s)

    def sample_one_hop(self, count: int, g: torch.Generator) -> Batch:
        return self.one_hop(torch.randint(self.n, (count,), generator=g), torch.randint(self.K, (count,), generator=g))

    def _triples(self, count: int, g: torch.Generator, keep) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ps, rs, ss = [], [], []
        got = 0
        for _ in range(1000):
            m = 4 * count + 64
            p = torch.randint(self.n, (m,), generator=g)
            r = torch.randint(self.n_relations, (m,), generator=g)
            s = torch.randint(self.K, (m,), generator=g)
            ok = keep(p, r, s, self.profiles.relations[p, r])
            ps.append(p[ok]), rs.append(r[ok]), ss.append(s[ok])
            got += int(ok.sum())
            if got >= count:
                break
        else:
            raise ValueError("no 2-hop questions satisfy the request (held-out sets cover everything)")
        return torch.cat(ps)[:count], torch.cat(rs)[:count], torch.cat(ss)[:count]

    def trainable(self, p, r, s, b) -> torch.Tensor:
        """True for 2-hop triples in no held-out set."""
        out = torch.ones(len(p), dtype=torch.bool)
        for m in self.heldout.membership(p, r, s, b).values():
            out &= ~m
        return out

    def sample_two_hop(self, count: int, g: torch.Generator, heldout: str | None = None) -> Batch:
        """Training 2-hop questions, or (``heldout=<set name>``) questions of one held-out set."""
        if heldout is None:
            keep = self.trainable
        else:
            keep = lambda p, r, s, b: self.heldout.membership(p, r, s, b)[heldout]
        return self.two_hop(*self._triples(count, g, keep))

    def sample(self, count: int, two_hop_fraction: float, g: torch.Generator) -> Batch:
        """A training batch: ``round(count · two_hop_fraction)`` 2-hop questions, the rest 1-hop."""
        k2 = int(round(count * two_hop_fraction))
        parts = []
        if count - k2:
            parts.append(self.sample_one_hop(count - k2, g))
        if k2:
            parts.append(self.sample_two_hop(k2, g))
        if len(parts) == 1:
            return parts[0]
        return Batch(*(torch.cat([getattr(x, f) for x in parts]) for f in ("tokens", "answer", "subject", "hops")))

    def eval_sets(self, count: int, seed: int, two_hop: bool = True) -> dict[str, Batch]:
        """``train_onehop`` (all 1-hop questions) and, with ``two_hop``, ``train_twohop`` plus one
        ``eval_<set>`` of ``count`` questions per held-out set."""
        sets = {"train_onehop": self.all_one_hop()}
        if two_hop:
            g = torch.Generator().manual_seed(seed + 104729)
            sets["train_twohop"] = self.sample_two_hop(count, g)
            for name in HELDOUT_SETS:
                sets[f"eval_{name}"] = self.sample_two_hop(count, g, heldout=name)
        return sets

    # --- display -------------------------------------------------------------------------------------
    def text(self, batch: Batch, i: int) -> str:
        """Row ``i`` of a batch as the original's question/answer text."""
        v = self.profiles.vocab
        tok = batch.tokens[i]
        name = " ".join(v.tokens[int(t)] for t in tok[:3])
        words = [v.tokens[int(t)] for t in (tok[3:4] if int(batch.hops[i]) == 1 else tok[3:5])]
        ans = [v.tokens[int(t)] for t, m in zip(tok, batch.answer[i]) if m]
        s = int(batch.subject[i])
        answer = "-".join(ans) if self.subjects[s] == "birth_date" else " ".join(ans)
        return f"Question: What was {name}'s {''.join(w + chr(39) + 's ' for w in words[:-1])}{words[-1]}? Answer: {answer}"
