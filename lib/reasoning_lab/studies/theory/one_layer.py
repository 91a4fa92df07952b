"""One-layer transformer dynamics of the reversal curse and of chain-of-thought (Zhu et al. 2024, §4).

The model is the reparameterised one-layer transformer of Tian et al. (2023) as Zhu et al. use it: tokens are
one-hot vectors of a vocabulary of ``M`` tokens, the last token of the context (here a relation token) is the
query, it attends over the whole context (itself included) with attention logits ``Z[x_t, x_T]``, and the
next-token logits are the attention-weighted sum of rows of an effective output matrix ``Y``:

    b = softmax_t(Z[x_t, x_T]),     logits(k) = Σ_t b_t · Y[x_t, k].

``Y[a, k]`` is the weight with which context token ``a`` votes for output ``k``; both ``Y`` and ``Z`` start at 0
and follow full-batch gradient descent on the mean cross-entropy (learning rates ``lr_y`` and ``lr_z``). We leave
out the layer norm of Tian et al.: the attention output is already a convex combination of one-hot rows.

Two facts make the curse exact here, and the tests check both. (1) A row ``Y[a, :]`` only moves when ``a`` is in
some training context, so a token that never appears as an input (``Bᵢ`` of a held-out pair) keeps a zero row.
(2) Every update of a row is ``−lr·b_t(p − e_y)``, whose entries sum to zero, so every row sums to zero forever,
and a column that is never a target under a given context only ever goes down. See ``bound_holds``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .bilinear import DTYPE, record_steps, single_thread


@dataclass
class Task:
    """Training contexts ``[N, T]`` (entity, relation), their targets, and named token/pair index sets."""

    vocab: int
    contexts: torch.Tensor
    targets: torch.Tensor
    tokens: dict[str, torch.Tensor]          # e.g. "A", "B", "C": [n] token ids of the entities
    relations: dict[str, int]                # e.g. "forward": id
    train: torch.Tensor                      # indices of pairs/chains trained in every direction/form
    heldout: torch.Tensor                    # indices of the others
    kind: str = "reversal"
    names: dict[int, str] = field(default_factory=dict)

    @property
    def chance(self) -> float:
        return 1.0 / self.vocab


def _check(n: int, n_heldout: int, vocab: int, used: int) -> None:
    if not 1 <= n_heldout < n:
        raise ValueError(f"need 1 <= n_heldout < n, got n={n}, n_heldout={n_heldout}")
    if vocab < used:
        raise ValueError(f"vocab={vocab} is smaller than the {used} tokens the task uses")


def reversal_task(n_pairs: int, n_heldout: int, vocab: int | None = None) -> Task:
    """Pairs ``(Aᵢ, Bᵢ)``. Training: ``Aᵢ R→ Bᵢ`` for every pair and ``Bᵢ R← Aᵢ`` for the first
    ``n_pairs − n_heldout``; the held-out query is ``Bᵢ R← ?`` for the last ``n_heldout`` pairs.
    Tokens: ``Aᵢ = i``, ``Bᵢ = n + i``, ``R→ = 2n``, ``R← = 2n+1``, then unused tokens up to ``vocab``."""
    n = n_pairs
    vocab = vocab or 2 * n + 2
    _check(n, n_heldout, vocab, 2 * n + 2)
    A, B = torch.arange(n), n + torch.arange(n)
    fwd, bwd = 2 * n, 2 * n + 1
    train = torch.arange(n - n_heldout)
    ctx = torch.cat([torch.stack([A, torch.full_like(A, fwd)], 1), torch.stack([B[train], torch.full_like(train, bwd)], 1)])
    tgt = torch.cat([B, A[train]])
    return Task(vocab, ctx, tgt, {"A": A, "B": B}, {"forward": fwd, "backward": bwd}, train,
                torch.arange(n - n_heldout, n), "reversal")


def chain_task(n_chains: int, n_heldout: int, vocab: int | None = None) -> Task:
    """Chains ``Aᵢ → Bᵢ → Cᵢ``. Training: ``Aᵢ → Bᵢ`` and ``Bᵢ → Cᵢ`` for every chain and the indirect
    ``Aᵢ ↝ Cᵢ`` for the first ``n_chains − n_heldout``; the held-out query is ``Aᵢ ↝ ?`` for the others.
    Tokens: ``Aᵢ = i``, ``Bᵢ = n+i``, ``Cᵢ = 2n+i``, ``→ = 3n``, ``↝ = 3n+1``."""
    n = n_chains
    vocab = vocab or 3 * n + 2
    _check(n, n_heldout, vocab, 3 * n + 2)
    A, B, C = torch.arange(n), n + torch.arange(n), 2 * n + torch.arange(n)
    direct, indirect = 3 * n, 3 * n + 1
    train = torch.arange(n - n_heldout)
    pair = lambda e, r: torch.stack([e, torch.full_like(e, r)], 1)
    ctx = torch.cat([pair(A, direct), pair(B, direct), pair(A[train], indirect)])
    tgt = torch.cat([B, C, C[train]])
    return Task(vocab, ctx, tgt, {"A": A, "B": B, "C": C}, {"direct": direct, "indirect": indirect}, train,
                torch.arange(n - n_heldout, n), "chain")


# ---------------------------------------------------------------------------------------------------
# The model, its loss and its closed-form gradient


def attention(Z: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` attention of the last token over the context: ``softmax_t Z[x_t, x_T]``."""
    return torch.softmax(Z[contexts, contexts[:, -1:]], -1)


def logits(Y: torch.Tensor, Z: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    b = attention(Z, contexts)
    return torch.einsum("nt,ntk->nk", b, Y[contexts])


def loss(Y: torch.Tensor, Z: torch.Tensor, contexts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits(Y, Z, contexts), targets)


def gradients(Y: torch.Tensor, Z: torch.Tensor, contexts: torch.Tensor, targets: torch.Tensor):
    """Closed-form ``(∂L/∂Y, ∂L/∂Z)``. With ``g = p − e_y`` (over ``N`` examples, divided by ``N``):
    ``∂L/∂Y[x_t] += b_t g`` and ``∂L/∂Z[x_t, x_T] += b_t (h_t − Σ_s b_s h_s)`` with ``h_t = Y[x_t]·g``."""
    N, T = contexts.shape
    M = Y.shape[0]
    b = attention(Z, contexts)                                         # [N, T]
    rows = Y[contexts]                                                 # [N, T, M]
    p = torch.softmax(torch.einsum("nt,ntk->nk", b, rows), -1)
    g = (p - F.one_hot(targets, M).to(Y.dtype)) / N                    # [N, M]
    gY = torch.zeros_like(Y).index_add_(0, contexts.reshape(-1), (b[..., None] * g[:, None, :]).reshape(-1, M))
    h = (rows * g[:, None, :]).sum(-1)                                 # [N, T]
    dz = b * (h - (b * h).sum(-1, keepdim=True))
    flat = (contexts * M + contexts[:, -1:]).reshape(-1)
    gZ = torch.zeros(M * M, dtype=Y.dtype, device=Y.device).index_add_(0, flat, dz.reshape(-1)).view(M, M)
    return gY, gZ


# ---------------------------------------------------------------------------------------------------
# Measurements


def probs(Y, Z, entities: torch.Tensor, relation: int, answers: torch.Tensor) -> torch.Tensor:
    """``p(answerᵢ | entityᵢ relation)`` for each i."""
    ctx = torch.stack([entities, torch.full_like(entities, relation)], 1)
    return torch.softmax(logits(Y, Z, ctx), -1).gather(1, answers[:, None])[:, 0]


def measure_reversal(task: Task, Y, Z) -> dict[str, float]:
    A, B = task.tokens["A"], task.tokens["B"]
    fwd, bwd = task.relations["forward"], task.relations["backward"]
    h, tr = task.heldout, task.train
    p_rev = probs(Y, Z, B[h], bwd, A[h])
    return {
        "forward_weight": Y[A[h], B[h]].mean().item(),          # Y[Aᵢ, Bᵢ], held-out pairs (trained A → B)
        "reverse_weight": Y[B[h], A[h]].mean().item(),          # Y[Bᵢ, Aᵢ], held-out pairs (never trained)
        "reverse_weight_trained": Y[B[tr], A[tr]].mean().item(),  # Y[Bᵢ, Aᵢ] where B ← A is trained
        "relation_weight": Y[bwd, A[h]].mean().item(),          # Y[R←, Aᵢ], held-out answers
        "attention_entity": attention(Z, torch.stack([A[h], torch.full_like(A[h], fwd)], 1))[:, 0].mean().item(),
        "forward_prob": probs(Y, Z, A[h], fwd, B[h]).mean().item(),
        "reverse_prob": p_rev.mean().item(),
        "reverse_prob_max": p_rev.max().item(),
        "reverse_prob_trained": probs(Y, Z, B[tr], bwd, A[tr]).mean().item(),
    }


def measure_chain(task: Task, Y, Z) -> dict[str, float]:
    A, B, C = task.tokens["A"], task.tokens["B"], task.tokens["C"]
    direct, indirect = task.relations["direct"], task.relations["indirect"]
    h, tr = task.heldout, task.train
    p_ind = probs(Y, Z, A[h], indirect, C[h])
    two_step = probs(Y, Z, A[h], direct, B[h]) * probs(Y, Z, B[h], direct, C[h])
    return {
        "forward_weight": Y[A[h], B[h]].mean().item(),          # Y[Aᵢ, Bᵢ], held-out chains
        "second_weight": Y[B[h], C[h]].mean().item(),           # Y[Bᵢ, Cᵢ]
        "indirect_weight": Y[A[h], C[h]].mean().item(),         # Y[Aᵢ, Cᵢ], held-out chains (A ↝ C never trained)
        "indirect_weight_trained": Y[A[tr], C[tr]].mean().item(),
        "indirect_relation_weight": Y[indirect, C[h]].mean().item(),
        "indirect_prob": p_ind.mean().item(),
        "indirect_prob_max": p_ind.max().item(),
        "indirect_prob_trained": probs(Y, Z, A[tr], indirect, C[tr]).mean().item(),
        "two_step_prob": two_step.mean().item(),
    }


MEASURES: dict[str, Callable] = {"reversal": measure_reversal, "chain": measure_chain}


# ---------------------------------------------------------------------------------------------------
# Gradient descent


@dataclass
class Dynamics:
    steps: torch.Tensor                     # recorded step indices
    series: dict[str, torch.Tensor]         # name -> [T]
    Y: torch.Tensor                         # final matrices
    Z: torch.Tensor
    loss: torch.Tensor                      # [T] training loss
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> copy of Y

    def last(self, key: str) -> float:
        return float(self.series[key][-1])


def simulate(task: Task, lr_y: float, lr_z: float, steps: int, record: int | Sequence[int] = 100,
             device="cpu", keep: Sequence[int] = ()) -> Dynamics:
    """Full-batch gradient descent on ``(Y, Z)`` from zero; records the task's measurements at ``record``
    (a number of log-spaced steps or a list) and keeps a copy of ``Y`` at each step in ``keep``."""
    at = record_steps(steps, record) if isinstance(record, int) else sorted({int(k) for k in record})
    at_set, measure = set(at), MEASURES[task.kind]
    M = task.vocab
    ctx, tgt = task.contexts.to(device), task.targets.to(device)
    Y = torch.zeros(M, M, dtype=DTYPE, device=device)
    Z = torch.zeros(M, M, dtype=DTYPE, device=device)
    rows: list[dict[str, float]] = []
    losses = []
    keep, snapshots = set(int(k) for k in keep), {}
    with single_thread():
        for step in range(steps + 1):
            if step in keep:
                snapshots[step] = Y.cpu().clone()
            if step in at_set:
                rows.append(measure(task, Y.cpu(), Z.cpu()))
                losses.append(loss(Y, Z, ctx, tgt).item())
            if step == steps:
                break
            gY, gZ = gradients(Y, Z, ctx, tgt)
            Y -= lr_y * gY
            if lr_z:
                Z -= lr_z * gZ
    series = {k: torch.tensor([r[k] for r in rows], dtype=DTYPE) for k in rows[0]}
    return Dynamics(torch.tensor(at), series, Y.cpu(), Z.cpu(), torch.tensor(losses, dtype=DTYPE), snapshots)


def bound_holds(task: Task, Y: torch.Tensor, Z: torch.Tensor, tol: float = 1e-12) -> bool:
    """The exact statements behind the curse, checked on a trained ``(Y, Z)``:
    rows sum to zero; rows of tokens never seen in a context are zero; and the held-out answer's
    probability is at most ``1/M``."""
    if Y.sum(1).abs().max() > tol * max(1.0, Y.abs().max().item()):
        return False
    seen = torch.zeros(task.vocab, dtype=torch.bool)
    seen[task.contexts.reshape(-1)] = True
    if Y[~seen].abs().max() > 0:
        return False
    m = MEASURES[task.kind](task, Y, Z)
    worst = m["reverse_prob_max"] if task.kind == "reversal" else m["indirect_prob_max"]
    return worst <= task.chance * (1 + 1e-9)


# ---------------------------------------------------------------------------------------------------
# Theory: the symmetric reduction of the forward sentences


def forward_ode(n_pairs: int, n_examples: int, vocab: int, lr_y: float, lr_z: float, steps: int,
                record: int | Sequence[int] = 100, substeps: int = 20) -> dict[str, torch.Tensor]:
    """Gradient flow of the ``n`` forward sentences ``Aᵢ R→ Bᵢ`` reduced by symmetry to six numbers.

    All forward sentences are alike, and they share no row of ``Y`` or ``Z`` with the backward ones, so the
    flow keeps ``Y[Aᵢ,Bᵢ] = a``, ``Y[Aᵢ,Bⱼ] = a′`` (j ≠ i), ``Y[Aᵢ,k] = a″`` (k not a B), ``Y[R,Bⱼ] = r``,
    ``Y[R,k] = r′`` and ``s = Z[Aᵢ,R] − Z[R,R]`` (attention ``β = σ(s)`` on the entity). With ``N`` training
    sentences, the own answer's probability ``p``, each other B's ``p_B`` and each other token's ``p_o``
    (time in optimizer steps):

        ȧ  = (η_Y/N) β (1−p)          ȧ′ = −(η_Y/N) β p_B          ȧ″ = −(η_Y/N) β p_o
        ṙ  = (η_Y/N)(1−β)(1 − p − (n−1) p_B)                     ṙ′ = −(η_Y/N)(1−β) n p_o
        ṡ  = −(η_Z/N)(n+1) β(1−β)(h_A − h_R)

    where ``h_A = −a(1−p) + (n−1)a′p_B + (M−n)a″p_o`` and ``h_R`` likewise with ``r, r, r′``. Integrated with
    classical Runge–Kutta, ``substeps`` per optimizer step early on and on a geometric grid later.
    """
    n, N, M = n_pairs, n_examples, vocab
    at = record_steps(steps, record) if isinstance(record, int) else sorted({int(k) for k in record})

    def field_(x):
        a, a1, a2, r, r1, s = x
        beta = 1 / (1 + math.exp(-s))
        o = [beta * a + (1 - beta) * r, beta * a1 + (1 - beta) * r, beta * a2 + (1 - beta) * r1]
        top = max(o)
        e = [math.exp(v - top) for v in o]
        zsum = e[0] + (n - 1) * e[1] + (M - n) * e[2]
        p, pB, po = e[0] / zsum, e[1] / zsum, e[2] / zsum
        q = 1 - p if p < 0.5 else (n - 1) * pB + (M - n) * po          # 1 − p without cancellation
        cy, cz = lr_y / N, lr_z / N
        hA = -a * q + (n - 1) * a1 * pB + (M - n) * a2 * po
        hR = -r * q + (n - 1) * r * pB + (M - n) * r1 * po
        return [cy * beta * q, -cy * beta * pB, -cy * beta * po,
                cy * (1 - beta) * (q - (n - 1) * pB), -cy * (1 - beta) * n * po,
                -cz * (n + 1) * beta * (1 - beta) * (hA - hR)], (p, beta)

    def rk4(x, h):
        k1, _ = field_(x)
        k2, _ = field_([xi + h / 2 * ki for xi, ki in zip(x, k1)])
        k3, _ = field_([xi + h / 2 * ki for xi, ki in zip(x, k2)])
        k4, _ = field_([xi + h * ki for xi, ki in zip(x, k3)])
        return [xi + h / 6 * (a + 2 * b + 2 * c + d) for xi, a, b, c, d in zip(x, k1, k2, k3, k4)]

    x, t = [0.0] * 6, 0.0
    out = {"forward_weight": [], "forward_prob": [], "attention_entity": []}
    for target in at:
        while t < target - 1e-12:
            h = min(max(1.0 / substeps, t / (20 * substeps)), target - t)   # relative step ≤ 1/(20·substeps)
            x = rk4(x, h)
            t += h
        _, (p, beta) = field_(x)
        out["forward_weight"].append(x[0])
        out["forward_prob"].append(p)
        out["attention_entity"].append(beta)
    res = {k: torch.tensor(v, dtype=DTYPE) for k, v in out.items()}
    res["steps"] = torch.tensor(at)
    return res
