"""A transformer whose weights are written by hand so that it runs breadth-first search exactly.

Tokens: position 0 is the *answer* token, positions ``1..N`` are the vertices. The residual stream has
``D = 4N + 2`` features (0-based):

==========  ================  ==============================================================
index       name              content at the start
==========  ================  ==============================================================
0           ANS               1 on the answer token
1..N        NBR[j]            vertex v: 1 if j is a neighbour of v
N+1..2N     REACH[j]          vertex v: 1 if j is reachable from v (starts as the neighbours)
2N+1..3N    OUT[L]            written by the read-out head of layer L
3N+1..4N    SELF[j]           vertex v: one-hot of v
4N+1        NOTANS            1 on the vertex tokens
==========  ================  ==============================================================

Every layer has ``N`` *reach* heads (one per vertex ``j``, the same weights in every layer) and one
*read-out* head. Reach head ``j`` lets a vertex ``v`` that already reaches ``j`` attend to the
neighbours of ``j`` and add their one-hot ``SELF`` vectors to its ``REACH``; a vertex that does not
reach ``j`` attends to the answer token instead (an attention sink whose value is zero). After the
heads, ``REACH`` is squashed back to {0, 1} by ``σ(s (x − θ))`` (the only other non-linearity). So
after layer ``L`` a vertex reaches everything within ``L + 2`` steps. The read-out head of layer ``L``
lets the answer token look at vertex 1: it attends there (value 1 into ``OUT[L]``) iff vertex 1
reaches vertex 2, i.e. iff ``d(1, 2) <= L + 1``. A final linear map turns the ``OUT`` bits into the
distance, ``UNREACHABLE`` when no layer fired.

The attention scores are sums of a few large constants, so the softmaxes are only *nearly* hard.
:func:`scaled_constants` picks them as functions of ``N`` so that every leak stays below ``eps``
whatever the graph (see the notebook for the derivation); the constants of the original appendix
are fixed numbers and are kept as ``constants="appendix"`` for comparison.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .data import UNREACHABLE, adjacency


def scaled_constants(n: int, eps: float = 1e-6, out_digits: float = 36.0) -> dict[str, float]:
    """Constants that make the construction exact for graphs with up to ``n`` vertices.

    * sink score ``b``: the leak of a non-reaching query, ``n`` heads x ``n`` keys x ``e^-b``, must stay
      below a quarter of the squash threshold ``θ = 1/(2n)``: ``b = ln(8 n^2) + 3``;
    * reach score ``a``: a reaching query must put all but ``1/n`` of its mass on the neighbours,
      against the sink and ``n`` other keys: ``a = b + ln(2n) + 3``;
    * squash ``σ(s (x − θ))``: a newly reached vertex gets at least ``1/(n−1)`` (a neighbour list is
      shared by at most ``n − 1`` vertices), so the input gap around ``θ`` is ``1/(4n)`` and
      ``s = 4 n ln(1/eps)`` maps it to within ``eps`` of 0 and 1 — the slope must grow like ``n``;
    * read-out score ``c``: the answer token's scores differ by ``c/2``, so each ``OUT`` bit is off by
      about ``e^{-c/2}``; ``c = 2 (out_digits + ln(n + 1))`` keeps the sum of ``n`` such errors far
      below float64 resolution.
    """
    b = math.log(8 * n * n) + 3.0
    a = b + math.log(2 * n) + 3.0
    return {"a": a, "b": b, "s": 4 * n * math.log(1 / eps), "theta": 1 / (2 * n),
            "c": 2 * (out_digits + math.log(n + 1)), "style": "scaled"}


def appendix_constants() -> dict[str, float]:
    """The original appendix: BIG, SUPABIG, MED, CURSE = 12, 30, 7, 5 (fixed for every n)."""
    return {"big": 12.0, "supabig": 30.0, "med": 7.0, "curse": 5.0, "style": "appendix"}


class HandcraftedBFS(nn.Module):
    """``HandcraftedBFS(N)(edges [B, E, 2]) -> d(1, 2)`` (``UNREACHABLE`` when there is no path).

    ``edges`` are 1-based vertex ids up to ``N`` with 0 as padding (the format of ``make_batch``). The
    Q, K, V matrices are ``nn.Parameter``s (reach heads shared by all layers, one read-out head per
    layer); the output projections, the squash and the final linear map are fixed buffers.
    ``constants="appendix"`` rebuilds the original appendix construction, which outputs ``N + 1``
    for an unreachable vertex.
    """

    def __init__(self, max_vertices: int, constants: str | dict = "scaled", dtype=torch.float64):
        super().__init__()
        if not 2 <= max_vertices <= UNREACHABLE:
            raise ValueError(f"max_vertices={max_vertices} is not allowed: expected 2..{UNREACHABLE}")
        N = self.N = max_vertices
        D = self.D = 4 * N + 2
        if isinstance(constants, str):
            constants = {"scaled": lambda: scaled_constants(N), "appendix": appendix_constants}[constants]()
        self.constants = dict(constants)
        ANS, NOTANS = 0, 4 * N + 1
        NBR, REACH, OUT, SELF = (lambda j: 1 + j), (lambda j: N + 1 + j), (lambda L: 2 * N + 1 + L), \
            (lambda j: 3 * N + 1 + j)            # j, L are 0-based (vertex j + 1, layer L)
        self.reach_slice = slice(N + 1, 2 * N + 1)
        self.out_slice = slice(2 * N + 1, 3 * N + 1)
        rq, rk, rv = torch.zeros(N, 2, D), torch.zeros(N, 2, D), torch.zeros(N, N, D)
        oq, ok, ov = torch.zeros(N, 3, D), torch.zeros(N, 3, D), torch.zeros(N, 1, D)
        c = self.constants
        if c["style"] == "scaled":
            for j in range(N):
                rq[j, 0, REACH(j)] = c["a"]                       # a * REACH_v[j]
                rq[j, 1, NOTANS] = rq[j, 1, ANS] = 1.0            # 1 for every token
                rk[j, 0, NBR(j)] = 1.0                            # NBR_w[j]
                rk[j, 1, ANS] = c["b"]                            # the sink
                for w in range(N):
                    rv[j, w, SELF(w)] = 1.0
            for L in range(N):
                oq[L, :, ANS] = 1.0                               # only the answer token asks
                ok[L, 0, REACH(1)] = c["c"]                       # c * REACH_w[2]
                ok[L, 1, SELF(0)] = c["c"]                        # + c * SELF_w[1]
                ok[L, 2, NOTANS] = -1.5 * c["c"]                  # - 1.5 c on vertex tokens
                ov[L, 0, SELF(0)] = 1.0
            weights = torch.ones(N)
            weights[N - 1] = UNREACHABLE - N                      # unreachable -> UNREACHABLE
        elif c["style"] == "appendix":
            big, supa, med = c["big"], c["supabig"], c["med"]
            for j in range(N):
                rq[j, 0, REACH(j)] = supa
                rq[j, 1, NOTANS] = 1.0
                rk[j, 0, NBR(j)] = 1.0
                rk[j, 1, ANS] = big
                for w in range(N):
                    rv[j, w, SELF(w)] = 1.0
            for L in range(N):
                oq[L, :, ANS] = 1.0
                ok[L, 0, SELF(0)], ok[L, 0, NOTANS] = big + supa, -big
                ok[L, 1, REACH(1)], ok[L, 1, NOTANS], ok[L, 1, ANS] = big + supa, -supa, -(big + supa)
                ok[L, 2, ANS] = med
                ov[L, 0, SELF(0)] = 1.0
            weights = torch.ones(N)                               # unreachable -> N + 1
        else:
            raise ValueError(f"unknown constants style {c['style']!r}")
        self.reach_q, self.reach_k, self.reach_v = (nn.Parameter(t.to(dtype)) for t in (rq, rk, rv))
        self.read_q, self.read_k, self.read_v = (nn.Parameter(t.to(dtype)) for t in (oq, ok, ov))
        self.register_buffer("out_weights", weights.to(dtype))

    # -----------------------------------------------------------------------------------------------
    def embed(self, edges: torch.Tensor) -> torch.Tensor:
        """The initial residual stream ``[B, N + 1, 4N + 2]`` of a batch of edge lists."""
        N, D = self.N, self.D
        A = adjacency(edges.long(), N)[:, 1:, 1:].to(self.out_weights.dtype)       # [B, N, N]
        B = A.shape[0]
        X = torch.zeros(B, N + 1, D, dtype=A.dtype, device=A.device)
        X[:, 0, 0] = 1.0
        X[:, 1:, 1:N + 1] = A
        X[:, 1:, N + 1:2 * N + 1] = A
        X[:, 1:, 3 * N + 1:4 * N + 1] = torch.eye(N, dtype=A.dtype)
        X[:, 1:, 4 * N + 1] = 1.0
        if self.constants["style"] == "appendix":
            X[:, 0, N + 1:2 * N + 1] = 1.0
        return X

    def label(self, d: torch.Tensor) -> torch.Tensor:
        """BFS distances in this model's convention (the appendix outputs N + 1 for unreachable)."""
        if self.constants["style"] == "appendix":
            return torch.where(d == UNREACHABLE, self.N + 1, d)
        return d

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        c = self.constants
        if c["style"] == "appendix":
            return 2 * torch.sigmoid(c["curse"] * x) - 1
        return torch.sigmoid(c["s"] * (x - c["theta"]))

    def layer(self, X: torch.Tensor, L: int) -> torch.Tensor:
        """One layer: N reach heads and one read-out head on the same input, then the squash."""
        N, D = self.N, self.D
        W = torch.cat([self.reach_q.reshape(2 * N, D), self.reach_k.reshape(2 * N, D),
                       self.reach_v.reshape(N * N, D), self.read_q[L], self.read_k[L], self.read_v[L]])
        Y = X @ W.T                                                                  # [B, T, M]
        B, T, _ = Y.shape
        q, k, v, oq, ok, ov = Y.split([2 * N, 2 * N, N * N, 3, 3, 1], -1)
        q, k = q.view(B, T, N, 2).transpose(1, 2), k.view(B, T, N, 2).transpose(1, 2)
        v = v.view(B, T, N, N).transpose(1, 2)                                       # [B, heads, T, N]
        reach = (torch.softmax(q @ k.transpose(-1, -2), -1) @ v).sum(1)              # [B, T, N]
        out = torch.softmax(oq @ ok.transpose(-1, -2), -1) @ ov                      # [B, T, 1]
        onehot = torch.zeros(N, dtype=X.dtype, device=X.device)
        onehot[L] = 1.0
        new_reach = self.squash(X[..., self.reach_slice] + reach)
        new_out = X[..., self.out_slice] + out * onehot
        return torch.cat([X[..., :N + 1], new_reach, new_out, X[..., 3 * N + 1:]], -1)

    @torch.no_grad()
    def residuals(self, edges: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream before the first layer and after every layer."""
        X = self.embed(edges)
        states = [X]
        for L in range(self.N):
            X = self.layer(X, L)
            states.append(X)
        return states

    def readout(self, X: torch.Tensor) -> torch.Tensor:
        out = X[:, 0, self.out_slice]
        return 1.0 + ((1.0 - out) * self.out_weights).sum(-1)

    def forward(self, edges: torch.Tensor) -> torch.Tensor:
        X = self.embed(edges)
        for L in range(self.N):
            X = self.layer(X, L)
        return self.readout(X)


MATRICES = ("reach_q", "reach_k", "reach_v", "read_q", "read_k", "read_v")


STUDY_ORDER = ("reach_q", "read_k", "reach_v", "read_q", "reach_k", "read_v")


def destroy_matrix(model: HandcraftedBFS, generator: torch.Generator, kind: str | None = None) -> tuple[str, int]:
    """Replace one Q, K or V matrix (one head's) by N(0, 1) entries; return (which, head index).

    Without ``kind`` it is picked uniformly among the six (as in the original study), then the head
    or layer uniformly. A destroyed reach matrix is shared by every layer, so it breaks the whole depth.
    """
    if kind is None:
        kind = MATRICES[int(torch.randint(len(MATRICES), (1,), generator=generator))]
    elif kind not in MATRICES:
        raise ValueError(f"unknown matrix kind {kind!r}; valid kinds: " + ", ".join(MATRICES))
    param = getattr(model, kind)
    index = int(torch.randint(param.shape[0], (1,), generator=generator))
    with torch.no_grad():
        param[index] = torch.randn(param.shape[1:], generator=generator, dtype=param.dtype)
    return kind, index


# ---------------------------------------------------------------------------------------------------
# Checks, the perturb-and-retrain study, and the picture of the residual stream
def random_graphs(n_graphs: int, max_vertices: int, generator: torch.Generator, min_vertices: int = 3,
                  exact_n: bool = False):
    """Edge lists of the task's random graphs (n uniform in [min, max], or n = max) and their d(1, 2)."""
    from .data import distances, random_edges

    if exact_n:
        n = torch.full((n_graphs,), max_vertices)
    else:
        n = torch.randint(min_vertices, max_vertices + 1, (n_graphs,), generator=generator)
    edges = random_edges(n, max_vertices, generator)
    return edges, distances(edges, max_vertices)


@torch.no_grad()
def exactness(model: HandcraftedBFS, edges: torch.Tensor, labels: torch.Tensor, chunk: int = 256) -> dict:
    """MSE and max |error| of the model's distances against BFS labels (same unreachable convention)."""
    out = torch.cat([model(edges[i:i + chunk]) for i in range(0, len(edges), chunk)])
    err = out - labels.to(out.dtype)
    return {"mse": float(err.pow(2).mean()), "max_abs_error": float(err.abs().max()), "outputs": out}


def perturb_and_retrain(max_vertices: int, seed: int, steps: int, batch_size: int, lr: float,
                        dtype=torch.float32, kind: str | None = None, checkpoint=None,
                        checkpoint_every: int = 0, constants: str | dict = "scaled") -> dict:
    """Destroy one Q/K/V matrix (seeded), then retrain all Q/K/V with Adam on fresh random graphs
    (:func:`reasoning_lab.train.fit`; with ``checkpoint`` a rerun resumes).

    Returns the destroyed matrix, its head/layer index and the per-step training MSE (step 0 is the
    loss of the destroyed model before any update; the last, after ``steps`` updates, on one more batch).
    ``constants`` as in :class:`HandcraftedBFS`; the labels follow the model's convention for an
    unreachable vertex.
    """
    from ...train import LoopConfig, fit
    from .model import GraphBatches

    gen = torch.Generator().manual_seed(seed)
    model = HandcraftedBFS(max_vertices, constants=constants, dtype=dtype)
    kind, index = destroy_matrix(model, gen, kind)
    batches = GraphBatches(lambda n, g: random_graphs(n, max_vertices, g), batch_size, gen)

    def mse(forward, edges, labels):
        return (forward(edges) - model.label(labels).to(dtype)).pow(2).mean()

    def objective(forward, batch):
        _step, (edges, labels) = batch
        loss = mse(forward, edges, labels)
        return loss, 1, {"loss": float(loss.detach())}

    cfg = LoopConfig(steps=steps, lr=lr, optimizer="adam", bf16=False, checkpoint_path=checkpoint,
                     checkpoint_every=checkpoint_every, progress=False)
    history = fit(model, batches, objective, cfg)[0]
    with torch.no_grad():
        final = float(mse(model, *batches.batch(steps)[1]))
    return {"kind": kind, "index": index, "losses": history.data.get("loss", []) + [final], "seed": seed}


def draw_residual(ax, X: torch.Tensor, N: int, title: str = "") -> None:
    """Heat-map of one graph's residual stream ``[N + 1, 4N + 2]`` with its blocks labelled."""
    import numpy as np

    M = X.detach().double().numpy()
    im = ax.imshow(M, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(N + 1), ["answer"] + [f"vertex {v}" for v in range(1, N + 1)], fontsize=9)
    blocks = [("ANS", 0, 0), ("NBR", 1, N), ("REACH", N + 1, 2 * N), ("OUT", 2 * N + 1, 3 * N),
              ("SELF", 3 * N + 1, 4 * N), ("NOTANS", 4 * N + 1, 4 * N + 1)]
    ax.set_xticks([(a + b) / 2 for _, a, b in blocks], [name for name, _, _ in blocks], fontsize=9)
    for _, a, b in blocks[1:]:
        ax.axvline(a - 0.5, color="white", lw=1.2)
    ax.set_xlabel(f"residual feature (D = 4N + 2 = {4 * N + 2})")
    ax.grid(False)
    if title:
        ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="value")
    del np


def exactness_rows(sizes, generator: torch.Generator, graphs: int = 256) -> list[dict]:
    """MSE and max |error| of the scaled and the appendix constants on random graphs with all
    ``n`` vertices present, for every ``n`` in ``sizes`` (each in its own unreachable convention)."""
    rows = []
    for n in sizes:
        edges, d = random_graphs(graphs, n, generator, exact_n=True)
        ours = exactness(HandcraftedBFS(n), edges, d)
        appendix = HandcraftedBFS(n, constants="appendix")
        app = exactness(appendix, edges, appendix.label(d))
        rows.append({"n": n, "mse": ours["mse"], "max_abs_error": ours["max_abs_error"],
                     "appendix_mse": app["mse"], "appendix_max_abs_error": app["max_abs_error"]})
    return rows


def exactness_table(rows: list[dict]) -> str:
    lines = [f"{'N':>3} | {'ours: MSE':>10} {'max |err|':>10} | {'appendix: MSE':>14} {'max |err|':>10}"]
    lines += [f"{r['n']:>3} | {r['mse']:10.2e} {r['max_abs_error']:10.2e} | "
              f"{r['appendix_mse']:14.2e} {r['appendix_max_abs_error']:10.2e}" for r in rows]
    return "\n".join(lines)


def long_path_example(n: int, generator: torch.Generator, min_distance: int = 4, pool: int = 256):
    """One random graph with all ``n`` vertices and a reachable ``d(1, 2) >= min_distance``."""
    edges, d = random_graphs(pool, n, generator, exact_n=True)
    pick = int(torch.nonzero((d >= min_distance) & (d < UNREACHABLE))[0])
    return edges[pick:pick + 1], d[pick:pick + 1]


def residual_figure(X: torch.Tensor, N: int, title: str = ""):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.6))
    draw_residual(ax, X, N, title)
    return fig


def constants_table(sizes) -> str:
    """The scaled constants for each graph size."""
    return "\n".join(f"N = {n:2d}: a = {c['a']:.2f}, b = {c['b']:.2f}, squash slope s = {c['s']:.0f}, "
                     f"theta = {c['theta']:.4f}, read-out c = {c['c']:.1f}"
                     for n in sizes for c in [scaled_constants(n)])


def check_text(check: dict, labels: torch.Tensor, N: int) -> str:
    return (f"{len(labels)} graphs, n in [3, {N}]: MSE = {check['mse']:.3e}, max |error| = "
            f"{check['max_abs_error']:.3e}; unreachable {(labels == UNREACHABLE).float().mean():.0%}")


def reach_figure(states: list[torch.Tensor], distance: int, N: int):
    """Vertex 1's REACH block after every layer; a dashed line at the first row reaching vertex 2."""
    import matplotlib.pyplot as plt

    from ...plots import heatmap

    model_slice = slice(N + 1, 2 * N + 1)
    reach1 = torch.stack([s[0, 1, model_slice] for s in states]).double().numpy()
    fig, ax = plt.subplots(figsize=(7, 4))
    heatmap(ax, reach1, "vertex 1's REACH block, layer by layer", "vertex",
            "layers applied (0 = input)", vmin=0, vmax=1, cmap="viridis",
            colorbar_label="REACH value")
    ax.set_xticks(range(N), range(1, N + 1))
    if distance < UNREACHABLE:
        ax.axhline(distance - 1 - 0.5, color="white", ls="--", lw=1.2)
    return fig
