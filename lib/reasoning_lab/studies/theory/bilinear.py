"""The bilinear model of the reversal curse (Zhu et al. 2024, §3).

Every token ``v`` of a vocabulary of ``m`` tokens has a fixed random embedding ``u_v ~ N(0, I_d/d)``; the
only trainable object is a ``d×d`` matrix ``Θ`` and the next-token logits are ``l(y|x) = u_xᵀ Θ u_y``.
The training set is ``D = {(x₁,y₁)} ∪ {(xᵢ,yᵢ), (yᵢ,xᵢ)}ᵢ≥₂`` (``n`` pairs of distinct tokens), the loss is
the mean cross-entropy over ``D`` and the reverse loss is ``L_rev = −log p(x₁|y₁)``: the first pair is seen
in one direction only.

The gradient is ``∇L = −(1/|D|) Σ_D u_x (u_y − ū_x)ᵀ`` with ``ū_x = Σ_v p(v|x) u_v``, so every update lies in
``span{u_a u_bᵀ}`` and, from ``Θ₀ = 0``, ``Θ_t = Uᵀ V_t U`` for an ``m×m`` matrix ``V_t`` (``U`` stacks the
embeddings as rows). All logits are then ``G V G`` with the Gram matrix ``G = U Uᵀ``, and gradient descent on
``Θ`` is exactly gradient descent on ``V`` with the update ``V[x, :] += (lr/|D|)(e_y − p(·|x))``. The
simulation runs in that form: its cost does not depend on ``d``, so many dimensions and seeds run as one
batch. The functions taking ``theta`` work in the original ``d×d`` form and are used to check it.

The symmetric variant constrains ``Θ = Θᵀ`` (gradient flow projected on symmetric matrices): then
``l(x|y) = l(y|x)`` and training on ``x₁ → y₁`` also trains ``y₁ → x₁``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

DTYPE = torch.float64


@contextlib.contextmanager
def single_thread():
    """Small batched matrix products run fastest on one thread (and do not fight over shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------
# The data set and the model in its original (d×d) form


@dataclass(frozen=True)
class PairData:
    """Token ids: ``xᵢ = i``, ``yᵢ = n + i`` (``i = 0 … n−1``); tokens ``2n … m−1`` are never used in ``D``
    but compete in every softmax. With i.i.d. embeddings the labelling is arbitrary."""

    n_pairs: int
    vocab: int
    inputs: torch.Tensor   # [|D|] input token of every training example (each input occurs once)
    targets: torch.Tensor  # [|D|]

    @property
    def x1(self) -> int:
        return 0

    @property
    def y1(self) -> int:
        return self.n_pairs

    @property
    def size(self) -> int:
        return len(self.inputs)


def pair_data(n_pairs: int, vocab: int) -> PairData:
    if n_pairs < 1 or vocab < 2 * n_pairs:
        raise ValueError(f"need n_pairs >= 1 and vocab >= 2*n_pairs, got n_pairs={n_pairs}, vocab={vocab}")
    x = torch.arange(n_pairs)
    y = n_pairs + x
    inputs = torch.cat([x[:1], x[1:], y[1:]])
    targets = torch.cat([y[:1], y[1:], x[1:]])
    return PairData(n_pairs, vocab, inputs, targets)


def embeddings(vocab: int, d: int, seed: int, dtype=DTYPE) -> torch.Tensor:
    """``[vocab, d]`` rows ``u_v ~ N(0, I_d/d)``; one fixed stream per ``(seed, d)``."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(d))
    return torch.randn(vocab, d, generator=g, dtype=dtype) / math.sqrt(d)


def logits(theta: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``[m, m]`` matrix of ``l(b|a) = u_aᵀ Θ u_b`` (row = input ``a``)."""
    return U @ theta @ U.T


def loss(theta: torch.Tensor, U: torch.Tensor, data: PairData) -> torch.Tensor:
    lg = U[data.inputs] @ theta @ U.T
    return F.cross_entropy(lg, data.targets)


def reverse_loss(theta: torch.Tensor, U: torch.Tensor, data: PairData) -> torch.Tensor:
    lg = U[data.y1] @ theta @ U.T
    return -torch.log_softmax(lg, -1)[data.x1]


def gradient(theta: torch.Tensor, U: torch.Tensor, data: PairData, symmetric: bool = False) -> torch.Tensor:
    """Closed form ``∇L = −(1/|D|) Σ_D u_x (u_y − ū_x)ᵀ``, ``ū_x = Σ_v p(v|x) u_v`` (symmetrised if asked)."""
    ux = U[data.inputs]                                    # [|D|, d]
    p = torch.softmax(ux @ theta @ U.T, -1)                # [|D|, m]
    ubar = p @ U                                           # [|D|, d]
    grad = -(ux.T @ (U[data.targets] - ubar)) / data.size
    return (grad + grad.T) / 2 if symmetric else grad


def logit_rates(theta: torch.Tensor, U: torch.Tensor, data: PairData, symmetric: bool = False) -> torch.Tensor:
    """``[m, m]`` matrix of ``d/dt l(b|a)`` under gradient flow ``Θ̇ = −∇L``:

    ``d/dt l(b|a) = u_aᵀ Θ̇ u_b = (1/|D|) Σ_D (u_aᵀu_x) (u_y − ū_x)ᵀ u_b``.
    """
    return -(U @ gradient(theta, U, data, symmetric) @ U.T)


def theta_from_gram(V: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``Θ = Uᵀ V U``: the ``d×d`` matrix that the Gram-form state ``V`` stands for."""
    return U.T @ V @ U


# ---------------------------------------------------------------------------------------------------
# Gradient descent, batched over dimensions and seeds, in Gram form


@dataclass
class Trajectory:
    """Recorded quantities, each ``[T, len(dims), len(seeds)]``; ``t`` is the flow time ``lr × step``."""

    t: torch.Tensor
    dims: list[int]
    seeds: list[int]
    train_loss: torch.Tensor
    reverse_loss: torch.Tensor
    forward_logit: torch.Tensor      # l(y₁|x₁)
    reverse_logit: torch.Tensor      # l(x₁|y₁)
    forward_rate: torch.Tensor       # d/dt l(y₁|x₁), from the formula
    reverse_rate: torch.Tensor       # d/dt l(x₁|y₁), from the formula
    reverse_rate_target: torch.Tensor  # its part (1/|D|) Σ_D (u_{y₁}ᵀu_x)(u_yᵀu_{x₁}) from the targets
    symmetric: bool = False

    @property
    def reverse_rate_softmax(self) -> torch.Tensor:
        """The other part, −(1/|D|) Σ_D (u_{y₁}ᵀu_x)(ū_xᵀu_{x₁}), from the softmax pushing every output down."""
        return self.reverse_rate - self.reverse_rate_target

    def train_loss_ratio(self) -> torch.Tensor:
        return self.train_loss / self.train_loss[0]

    def reverse_loss_ratio(self) -> torch.Tensor:
        return self.reverse_loss / self.reverse_loss[0]

    def epsilon_curve(self) -> torch.Tensor:
        """``ε(t) = log(L_rev(t)/L_rev(0)) / log(L(t)/L(0))`` for ``t > 0`` (``[T−1, dims, seeds]``)."""
        return self.reverse_loss_ratio()[1:].log() / self.train_loss_ratio()[1:].log()

    def epsilon(self) -> torch.Tensor:
        """``ε`` at the end of training, ``[dims, seeds]``."""
        return self.epsilon_curve()[-1]

    def epsilon_sup(self) -> torch.Tensor:
        """The smallest ``ε`` with ``L_rev(t)/L_rev(0) ≥ (L(t)/L(0))^ε`` at every recorded ``t > 0``."""
        return self.epsilon_curve().max(0).values

    def index(self, d: int) -> int:
        return self.dims.index(d)


def record_steps(steps: int, points: int) -> list[int]:
    """About ``points`` log-spaced step indices from 0 to ``steps`` (always both ends)."""
    if steps == 0:
        return [0]
    grid = torch.logspace(0, math.log10(steps), max(points - 1, 1), dtype=DTYPE).round().long().tolist()
    return sorted({0, steps, *grid})


def gram_matrices(dims: Sequence[int], seeds: Sequence[int], vocab: int, device="cpu") -> torch.Tensor:
    """``[len(dims), len(seeds), m, m]`` Gram matrices ``U Uᵀ`` of the embeddings."""
    rows = [torch.stack([(lambda U: U @ U.T)(embeddings(vocab, d, s)) for s in seeds]) for d in dims]
    return torch.stack(rows).to(device)


def simulate(dims: Iterable[int], n_pairs: int, vocab: int, lr: float, steps: int,
             seeds: Iterable[int] = (0,), symmetric: bool = False, record: int | Sequence[int] = 120,
             device="cpu") -> Trajectory:
    """Full-batch gradient descent from ``Θ₀ = 0`` for every ``(d, seed)`` at once.

    ``record`` is a number of log-spaced points or an explicit list of step indices.
    """
    dims, seeds = [int(d) for d in dims], [int(s) for s in seeds]
    data = pair_data(n_pairs, vocab)
    m, nd = vocab, data.size
    at = record_steps(steps, record) if isinstance(record, int) else sorted({int(k) for k in record})
    at_set = set(at)
    with single_thread():
        G = gram_matrices(dims, seeds, vocab, device).reshape(-1, m, m)          # [B, m, m]
        B = G.shape[0]
        inputs, targets = data.inputs.to(G.device), data.targets.to(G.device)
        rows = torch.cat([inputs, inputs.new_tensor([data.y1])])                 # inputs of D, then y₁
        G_rows = G[:, rows]                                                       # [B, |D|+1, m]
        G_rows_in = G_rows[:, :, inputs]                                          # [B, |D|+1, |D|]
        onehot = F.one_hot(targets, m).to(DTYPE)
        V = torch.zeros(B, m, m, dtype=DTYPE, device=G.device)
        out = {k: [] for k in ("L", "Lr", "f", "r", "fr", "rr", "rrt")}
        x1, y1 = data.x1, data.y1
        for step in range(steps + 1):
            lg = G_rows @ V @ G                                                   # [B, |D|+1, m]
            logp = torch.log_softmax(lg[:, :nd], -1)
            S = onehot - logp.exp()                                               # e_y − p(·|x)
            if step in at_set:
                out["L"].append(-logp.gather(2, targets.expand(B, nd)[..., None]).mean((1, 2)))
                out["Lr"].append(-torch.log_softmax(lg[:, nd], -1)[:, x1])
                out["f"].append(lg[:, 0, y1])
                out["r"].append(lg[:, nd, x1])
                rate = _rates_rows(G, G_rows, G_rows_in, S, inputs, symmetric, nd)  # [B, |D|+1, m]
                target = _rates_rows(G, G_rows, G_rows_in, onehot.expand_as(S), inputs, symmetric, nd)
                out["fr"].append(rate[:, 0, y1])
                out["rr"].append(rate[:, nd, x1])
                out["rrt"].append(target[:, nd, x1])
            if step == steps:
                break
            if symmetric:
                dV = torch.zeros_like(V)
                dV[:, inputs] = S
                V += (lr / (2 * nd)) * (dV + dV.transpose(1, 2))
            else:
                V.index_add_(1, inputs, S, alpha=lr / nd)      # each input occurs once in D
    shape = (len(dims), len(seeds))
    stack = lambda key: torch.stack(out[key]).reshape(len(at), *shape).cpu()
    return Trajectory(torch.tensor(at, dtype=DTYPE) * lr, dims, seeds, stack("L"), stack("Lr"), stack("f"),
                      stack("r"), stack("fr"), stack("rr"), stack("rrt"), symmetric)


def _rates_rows(G, G_rows, G_rows_in, S, inputs, symmetric, nd):
    """``d/dt l(b|a)`` for the recorded rows ``a``: ``G[a] V̇ G`` with ``V̇`` the flow direction (linear in S)."""
    if not symmetric:
        return G_rows_in @ S @ G / nd                       # V̇[inputs] = S/|D|, other rows 0
    dV = torch.zeros(G.shape, dtype=G.dtype, device=G.device)
    dV[:, inputs] = S
    return G_rows @ ((dV + dV.transpose(1, 2)) / (2 * nd)) @ G


def initial_rates(dims: Iterable[int], n_pairs: int, vocab: int, seeds: Iterable[int]) -> dict[str, torch.Tensor]:
    """Rates of the forward and reverse logits at ``Θ = 0`` from the formula, ``[dims, seeds]`` each."""
    traj = simulate(dims, n_pairs, vocab, lr=1.0, steps=0, seeds=seeds)
    return {"forward": traj.forward_rate[0], "reverse": traj.reverse_rate[0],
            "reverse_target": traj.reverse_rate_target[0], "reverse_softmax": traj.reverse_rate_softmax[0]}


# ---------------------------------------------------------------------------------------------------
# The orthogonal limit (d → ∞): every example of D evolves alone


def orthogonal_limit(t, vocab: int, n_data: int) -> dict[str, torch.Tensor]:
    """Exact gradient-flow solution when the embeddings are orthonormal (``G = I``, the ``d → ∞`` limit).

    Each input then owns one row of logits: the target logit ``l`` obeys ``l̇ = (1 − p)/|D|`` and each of the
    ``m − 1`` others ``−p_v/|D|``; the row sums to zero, so the others all equal ``−l/(m−1)`` and the margin is
    ``c·l`` with ``c = m/(m−1)``. With ``1 − p = (m−1)/(e^{cl} + m − 1)`` the ODE separates:

    ``e^{c l} − 1 + c (m−1) l = c (m−1) t / |D|``  →  ``l ≈ ((m−1)/m) · log(m t/|D|)`` for large ``t``.

    Returns the forward logit, the training loss ``log(1 + (m−1) e^{−cl})`` and the reverse loss ``log m``.
    """
    t = torch.as_tensor(t, dtype=DTYPE)
    m = vocab
    c = m / (m - 1)
    rhs = c * (m - 1) * t / n_data + 1.0
    # solve f(s) = e^s + (m−1) s − rhs = 0 for s = c·l by Newton from above (f convex, increasing)
    s = torch.log(rhs.clamp_min(1.0))
    for _ in range(60):
        s = s - (torch.exp(s) + (m - 1) * s - rhs) / (torch.exp(s) + (m - 1))
    logit = s / c
    return {"forward_logit": logit, "train_loss": torch.log1p((m - 1) * torch.exp(-s)),
            "reverse_loss": torch.full_like(t, math.log(m))}


def limit_direction(data: PairData) -> torch.Tensor:
    """``V̂`` with ``V(t) = l(t)·V̂`` in the orthogonal limit: row ``x`` is ``+1`` at its target, ``−1/(m−1)``
    elsewhere (rows of tokens that are never inputs are zero)."""
    m = data.vocab
    V = torch.zeros(m, m, dtype=DTYPE)
    V[data.inputs] = -1.0 / (m - 1)
    V[data.inputs, data.targets] = 1.0
    return V


def leakage_prediction(t, dims: Sequence[int], seeds: Sequence[int], n_pairs: int,
                       vocab: int) -> dict[str, torch.Tensor]:
    """First-order prediction at finite ``d``: keep the orthogonal-limit state ``V(t) = l(t)·V̂`` and read it
    through the actual Gram matrix, ``logits = G V(t) G``. The reverse row is then ``l(t)·k`` with the fixed
    random vector ``k = G[y₁] V̂ G``, whose entries are overlaps of order ``1/√d``: all that training on the
    other examples leaks into ``p(·|y₁)``. Returns ``reverse_loss`` ``[T, dims, seeds]`` and ``k``."""
    data = pair_data(n_pairs, vocab)
    lim = orthogonal_limit(t, vocab, data.size)
    V = limit_direction(data)
    G = gram_matrices(dims, seeds, vocab)                                   # [dims, seeds, m, m]
    k = G[..., data.y1, :].unsqueeze(-2) @ V @ G                            # [dims, seeds, 1, m]
    k = k[..., 0, :]
    logp = torch.log_softmax(lim["forward_logit"][:, None, None, None] * k[None], -1)
    return {"reverse_loss": -logp[..., data.x1], "k": k, "train_loss": lim["train_loss"]}


def initial_rate_theory(dims: Sequence[int], n_pairs: int, vocab: int) -> dict[str, torch.Tensor]:
    """Root mean square (over embeddings) of each part of the rates at ``Θ = 0``, to leading order:

    * forward: ``(|u_{x₁}|²|u_{y₁}|² − 1/m)/|D|``, with ``E|u|⁴ = 1 + 2/d``: about ``(1 + 2/d − 1/m)/|D|``;
    * reverse, target part ``(1/|D|) Σ_D (u_{y₁}ᵀu_x)(u_yᵀu_{x₁})``: the ``(x₁,y₁)`` term is ``g²`` with
      ``g = u_{y₁}ᵀu_{x₁} ~ N(0, 1/d)`` (``E g⁴ = 3/d²``) and the other ``2n−2`` terms are products of two
      independent overlaps (variance ``1/d²`` each): ``√(2n+1)/(|D| d)``;
    * reverse, softmax part: at ``Θ = 0`` every ``ū_x`` is the mean embedding, so the part is
      ``−w/|D| · Σ_{x ∈ inputs} u_{y₁}ᵀu_x`` with ``w = ū·u_{x₁} = (1 + ξ)/m``, ``ξ`` a sum of ``m−1`` overlaps:
      ``√(2n−1) √(1 + (m−1)/d) / (m |D| √d)``.
    """
    d = torch.as_tensor(list(dims), dtype=DTYPE)
    n, m = n_pairs, vocab
    nd = 2 * n - 1
    return {"forward": (1 + 2 / d - 1 / m) / nd,
            "reverse_target": math.sqrt(2 * n + 1) / (nd * d),
            "reverse_softmax": math.sqrt(2 * n - 1) * (1 + (m - 1) / d).sqrt() / (m * nd * d.sqrt())}


def compute_device(device) -> torch.device:
    """Where the float64 simulations run: CUDA when asked for, otherwise the CPU (MPS has no float64)."""
    device = torch.device(device)
    return device if device.type == "cuda" else torch.device("cpu")
