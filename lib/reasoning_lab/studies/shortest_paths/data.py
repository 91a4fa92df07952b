"""Random graphs, breadth-first-search labels and the seven data splits of the shortest-path task.

The generator follows the original task {cite}`wang2024shortest` exactly, but runs on whole batches
of tensors instead of one Python graph at a time:

* a graph has ``n`` vertices, ``n`` uniform in ``[3, max_vertices]`` (``[3, max_tune_vertices]`` for the
  small-graph splits), labelled ``1..n``;
* it gets ``n`` edge *attempts*: ``2n`` uniform vertex ids paired up; an attempt whose two ids are
  equal (a self-loop) is dropped, repeated edges are kept, every edge is written ``(min, max)`` in the
  order it was drawn and the list is padded with ``0`` up to ``max_vertices`` edges;
* the label is the breadth-first-search distance from vertex 1 to the target vertex, or
  ``UNREACHABLE = 15`` when there is no path (for every ``n``, as in the original code);
* the accept/reject filters of the original are applied per example, keeping ``n`` fixed while a
  graph is redrawn, so ``n`` stays uniform in the accepted data. Here that is done one graph size at
  a time: a round draws about as many candidates as the measured acceptance rate says are needed, and
  the accepted ones fill the open examples in draw order.

On-path targets take the vertex at depth ``k`` on the breadth-first-search tree path from 1 to 2,
with ``P(k) ∝ k`` for ``k = 1..d``. The tree is the one a FIFO queue builds when every vertex lists its
neighbours in increasing order (what a Python ``set`` of small integers does: exactly so for the
fine-tuning graphs, whose ids are all below 8); only which of several equally short paths is taken
depends on that choice, never the label.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

UNREACHABLE = 15          # the label of a target that vertex 1 cannot reach (the original's MAX_VTXS)
MIN_VERTICES = 3
MAX_VERTICES = 15
MAX_TUNE_VERTICES = 7


@dataclass(frozen=True)
class Split:
    name: str
    large: bool               # n up to max_vertices (True) or up to max_tune_vertices (False)
    target: str               # "two" | "onpath" | "any"
    large_target: bool = True # target ids up to max_vertices, or only up to max_tune_vertices
    short_path_filter: bool = False   # on-path: thin out d < 4 (fine-tuning set only)
    description: str = ""


SPLITS: dict[str, Split] = {s.name: s for s in (
    Split("pretrain", True, "two", description="target 2, accept/reject filter on the distance"),
    Split("finetune", False, "onpath", short_path_filter=True,
          description="small graphs, a target on the shortest 1-2 path"),
    Split("test-onpath-small-target", True, "onpath", large_target=False,
          description="large graphs, an on-path target with a small id"),
    Split("test-onpath", True, "onpath", description="large graphs, any on-path target"),
    Split("test-any-small-graphs", False, "any", large_target=False,
          description="small graphs, a uniform target among the small ids"),
    Split("test-any-small-target", True, "any", large_target=False,
          description="large graphs, a uniform target among the small ids"),
    Split("test-any-large", True, "any", description="large graphs, a uniform target among all ids"),
)}
SPLIT_NAMES = tuple(SPLITS)
TEST_SPLITS = tuple(s for s in SPLIT_NAMES if s.startswith("test-"))


# ---------------------------------------------------------------------------------------------------
# Graphs and breadth-first search on adjacency tensors
def random_edges(n: torch.Tensor, max_edges: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Edge lists ``[B, max_edges, 2]`` (1-based ids, 0 = padding) of ``n[b]`` random edge attempts each."""
    n = n.long()
    if int(n.max()) > max_edges:
        raise ValueError(f"a graph with {int(n.max())} vertices needs {int(n.max())} edge slots, "
                         f"only {max_edges} available")
    B = n.shape[0]
    ends = (torch.rand(B, max_edges, 2, generator=generator, dtype=torch.float64) * n[:, None, None]).long() + 1
    u, v = ends[..., 0], ends[..., 1]
    keep = (torch.arange(max_edges)[None, :] < n[:, None]) & (u != v)
    edges = torch.stack((torch.minimum(u, v), torch.maximum(u, v)), -1) * keep[..., None]
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)      # kept edges first, in draw order
    return edges.gather(1, order[..., None].expand(-1, -1, 2))


def adjacency(edges: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Boolean adjacency ``[B, V+1, V+1]`` (row/column 0 unused) of undirected edge lists."""
    B, E, _ = edges.shape
    V1 = num_vertices + 1
    if edges.numel() and (int(edges.max()) > num_vertices or int(edges.min()) < 0):
        raise ValueError(f"vertex ids must lie in 0..{num_vertices} (0 = padding)")
    A = torch.zeros(B * V1 * V1, dtype=torch.bool)
    base = (torch.arange(B) * V1 * V1)[:, None]
    a, b = edges[..., 0], edges[..., 1]
    A[(base + a * V1 + b).reshape(-1)] = True
    A[(base + b * V1 + a).reshape(-1)] = True
    A = A.view(B, V1, V1)
    A[:, 0, :] = False
    A[:, :, 0] = False
    return A


def bfs(A: torch.Tensor, source: int = 1, tree: bool = False):
    """Distances from ``source`` to every vertex, ``UNREACHABLE`` where there is no path: ``[B, V+1]``.

    One frontier expansion per level over the whole batch. With ``tree=True`` also return the parent
    of every reached vertex in the FIFO-queue search tree (neighbours scanned in increasing id;
    ``-1`` for the source and unreached vertices).
    """
    B, V1, _ = A.shape
    dist = torch.full((B, V1), UNREACHABLE, dtype=torch.long)
    dist[:, source] = 0
    frontier = torch.zeros(B, V1, dtype=torch.bool)
    frontier[:, source] = True
    reached = frontier.clone()
    parent = torch.full((B, V1), -1, dtype=torch.long)
    rank = torch.zeros(B, V1, dtype=torch.long)          # position in the queue within its level
    ids = torch.arange(V1)
    for level in range(1, V1):
        links = A & frontier[:, :, None]                # links[b, p, x]: p in the frontier, edge p-x
        new = links.any(1) & ~reached
        if not bool(new.any()):
            break
        dist[new] = level
        if tree:
            big = V1 * V1
            score = torch.where(links, rank[:, :, None], big)
            best, par = score.min(1)                     # the first frontier vertex in queue order
            parent = torch.where(new, par, parent)
            key = torch.where(new, best * V1 + ids, big * V1)
            rank = torch.where(new, (key[:, None, :] < key[:, :, None]).sum(-1), rank)
        reached |= new
        frontier = new
    return (dist, parent) if tree else dist


def distances(edges: torch.Tensor, num_vertices: int, targets: torch.Tensor | None = None) -> torch.Tensor:
    """BFS distance from vertex 1 to ``targets`` (default vertex 2) for a batch of edge lists."""
    dist = bfs(adjacency(edges, num_vertices))
    if targets is None:
        return dist[:, 2]
    return dist.gather(1, targets.long()[:, None]).squeeze(1)


def ancestor(parent: torch.Tensor, dist: torch.Tensor, node: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """The vertex at ``depth`` on the tree path from the source to ``node`` (``depth <= dist[node]``)."""
    cur = node.clone()
    rows = torch.arange(len(node))
    for _ in range(parent.shape[1]):
        deeper = dist[rows, cur] > depth
        if not bool(deeper.any()):
            break
        cur = torch.where(deeper, parent[rows, cur], cur)
    return cur


# ---------------------------------------------------------------------------------------------------
# Candidate graphs and the accept/reject filters
def _uniform(shape, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64)


_PAIR_TABLES: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _pair_tables(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For the ordered pairs ``(a, b) = divmod(r, k) + 1``, ``r < k*k``: the bit masks ``[k*k]`` int16
    (bits ``a - 1`` and ``b - 1``) and the edges ``[k*k, 2]`` as written, ``(min, max)``, ``(0, 0)`` for
    a self-loop."""
    if k not in _PAIR_TABLES:
        r = torch.arange(k * k)
        a, b = r // k, r % k
        mask = (torch.bitwise_left_shift(1, a) | torch.bitwise_left_shift(1, b)).to(torch.int16)
        edge = torch.stack((torch.minimum(a, b), torch.maximum(a, b)), -1) + 1
        _PAIR_TABLES[k] = mask, edge * (a != b)[:, None]
    return _PAIR_TABLES[k]


_COMPACT_BELOW = 0.9      # drop finished rows once fewer than this share of the rows is still searching


def bit_bfs(edge: torch.Tensor, target_bit) -> torch.Tensor:
    """Distance from vertex 1 to a target for edge masks ``[m, k]`` int16 (vertex ``v`` is bit ``v - 1``).

    ``target_bit`` is the target's bit (an int, or ``[m]`` int16; ``0`` = a target no edge reaches).
    Vertex sets are 15-bit masks and every edge is the mask of its two ends, so one level of the
    search keeps the edges that touch the frontier (``min(edge & frontier, 1) * edge``: no sign bit is
    used, so the clamp is a test for non-zero), ORs them together by halving the edge axis in place and
    removes what was reached before. Rows that found their target or ran out of frontier are dropped
    once they are a good part of the batch; until then they are harmless (the target is found once,
    an empty frontier stays empty). Returns ``[m]`` int16, ``UNREACHABLE`` where there is no path.
    """
    m, k = edge.shape
    d = torch.full((m,), UNREACHABLE, dtype=torch.int16)
    front = torch.ones(m, 1, dtype=torch.int16)
    seen = front.clone()
    per_row = torch.is_tensor(target_bit)
    if per_row:
        target_bit = target_bit.view(-1, 1)
    rows = None                                           # None: the rows are still 0..m-1
    d_now = d                                             # d of the rows still in the loop
    for level in range(1, 16):
        x = (edge & front).clamp_(max=1).mul_(edge)
        w = k
        while w > 1:
            h = w // 2
            x[:, :h] |= x[:, w - h:w]
            w -= h
        new = x[:, :1] & ~seen
        found = ((new & target_bit) != 0).view(-1)
        d_now.masked_fill_(found, level)
        go = (new.view(-1) != 0) ^ found                  # found implies a non-empty new set
        alive = int(go.sum())
        if alive == 0:
            break
        seen = seen | new
        front = new
        if alive < _COMPACT_BELOW * len(go):
            if rows is not None:
                d.index_copy_(0, rows, d_now)
            idx = go.nonzero().squeeze(1)
            rows = idx if rows is None else rows.index_select(0, idx)
            d_now = d_now.index_select(0, idx)
            edge, front, seen = edge.index_select(0, idx), front.index_select(0, idx), seen.index_select(0, idx)
            if per_row:
                target_bit = target_bit.index_select(0, idx)
    if rows is not None:
        d.index_copy_(0, rows, d_now)
    return d


def edge_bfs(u: torch.Tensor, v: torch.Tensor, num_vertices: int, target: torch.Tensor, path: bool = False):
    """Distance from vertex 1 to ``target`` by frontier expansion over edge lists ``u``-``v`` ([m, E]).

    Every level marks the endpoints of edges that touch the frontier (a scatter over the edge list,
    so no adjacency matrix is built); rows leave the loop as soon as their target is found or their
    frontier is empty. Self-loops and ``(0, 0)`` padding edges are harmless.

    With ``path=True`` also return the search-tree path to the target, coded as a base-16 number
    whose digits are the vertices 1, ..., target (most significant first). A FIFO queue that scans
    neighbours in increasing id visits each level in increasing order of these codes, so the parent
    a vertex gets from the queue is the frontier neighbour with the smallest code.
    """
    m = u.shape[0]
    V1 = num_vertices + 1
    d = torch.full((m,), UNREACHABLE, dtype=torch.long)
    code_out = torch.zeros(m, dtype=torch.long)
    reached = torch.zeros(m, V1, dtype=torch.bool)
    reached[:, 1] = True
    frontier = reached.to(torch.uint8)
    code = reached.long()                      # code[1] = 1: the path "1"
    none = torch.iinfo(torch.long).max
    rows = torch.arange(m)
    target = target.long()
    for level in range(1, V1):
        if path:
            via_u = torch.where(frontier.gather(1, u).bool(), code.gather(1, u) * 16 + v, none)
            via_v = torch.where(frontier.gather(1, v).bool(), code.gather(1, v) * 16 + u, none)
            best = torch.full((len(rows), V1), none, dtype=torch.long)
            best.scatter_reduce_(1, v, via_u, "amin").scatter_reduce_(1, u, via_v, "amin")
            new = (best < none) & ~reached
            code = torch.where(new, best, code)
        else:
            hits = torch.zeros(len(rows), V1, dtype=torch.uint8)
            hits.scatter_add_(1, v, frontier.gather(1, u)).scatter_add_(1, u, frontier.gather(1, v))
            new = (hits > 0) & ~reached
        found = new.gather(1, target[:, None]).squeeze(1)
        d[rows[found]] = level
        if path:
            code_out[rows[found]] = code[found].gather(1, target[found][:, None]).squeeze(1)
        go = new.any(1) & ~found
        if not bool(go.any()):
            break
        rows, u, v, target = rows[go], u[go], v[go], target[go]
        reached, frontier = (reached | new)[go], new[go].to(torch.uint8)
        if path:
            code = code[go]
    return (d, code_out) if path else d


def path_vertex(code: torch.Tensor, d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The vertex at depth ``k`` on a path coded by :func:`edge_bfs` whose end is at depth ``d``."""
    return (code >> (4 * (d - k))) & 15


_TWO_KEEP = torch.tensor([1.0 / (2 * (6 - d)) if d < 6 else 1.0 for d in range(UNREACHABLE)] + [1.0 / UNREACHABLE],
                         dtype=torch.float64)


def _two_filter(d: torch.Tensor, generator) -> torch.Tensor:
    """Pre-training filter: keep 6 <= d < 15; keep d < 6 with probability 1/(2(6-d)), unreachable with 1/15."""
    return _uniform(len(d), generator) < _TWO_KEEP.index_select(0, d)


def _short_path_filter(d: torch.Tensor, generator) -> torch.Tensor:
    """Fine-tuning filter: a 1-2 path must exist; keep d < 4 with probability 1/(3(4-d))."""
    p = torch.where(d < 4, 1.0 / (3.0 * (4 - d.clamp(max=3)).double()), 1.0)
    return (d < UNREACHABLE) & (_uniform(len(d), generator) < p)


def _onpath_targets(ends: torch.Tensor, num_vertices: int, generator):
    """Depth ``k`` with P(k) ∝ k on the search-tree path 1 → 2, and the vertex there: (targets, k)."""
    d, code = edge_bfs(ends[..., 0], ends[..., 1], num_vertices, torch.full((len(ends),), 2), path=True)
    ks = torch.arange(1, num_vertices + 1, dtype=torch.float64)
    weights = ks[None, :] * (ks[None, :] <= d.clamp(max=num_vertices)[:, None])
    k = torch.multinomial(weights, 1, generator=generator).squeeze(1) + 1
    return path_vertex(code, d, k), k


# Acceptance rates of candidate graphs of k = 3..15 vertices, measured over 0.4-1.2 million candidates
# per size (two decimals' worth of precision is all the sizing needs): the pre-training filter, the on-path
# split's "a 1-2 path exists" and the fine-tuning split's thinned version of it.
_RATES = {
    "two": (0.094, 0.096, 0.099, 0.104, 0.109, 0.114, 0.120, 0.127, 0.135, 0.141, 0.149, 0.156, 0.163),
    "onpath": (0.694, 0.661, 0.640, 0.626, 0.618, 0.611, 0.606, 0.604, 0.602, 0.601, 0.601, 0.600, 0.600),
    "onpath-short": (0.087, 0.094, 0.108, 0.125, 0.142, 0.160, 0.176, 0.192, 0.208, 0.223, 0.236, 0.250, 0.261),
}


def _prior_rate(split: Split, k: int) -> float:
    """The expected acceptance rate of candidate graphs of ``k`` vertices; it sizes the first round of
    candidates (the rate measured in that round sizes any later one)."""
    if split.target == "any":
        return 1.0
    kind = "onpath-short" if split.target == "onpath" and split.short_path_filter else split.target
    return _RATES[kind][k - MIN_VERTICES]


def _fill(split: Split, k: int, need: int, generator, max_vertices: int, max_tune_vertices: int):
    """``need`` accepted graphs of ``k`` vertices: (edges [need, k, 2], targets, labels, tried, passed).

    Candidates are drawn in rounds of about ``need / acceptance`` graphs plus three standard deviations,
    so one round nearly always suffices; the accepted ones are kept in draw order. An edge attempt is one
    uniform draw among the ``k * k`` ordered id pairs (the same law as two uniform ids), looked up as a
    bit mask for the search and decoded only for the kept graphs.
    """
    masks, pair_edges = _pair_tables(k)
    prior = _prior_rate(split, k)
    tried = passed = 0
    parts = []
    left = need
    while left:
        rate = (passed + 4 * prior) / (tried + 4)
        m = left if prior >= 1 else int((left + 3 * left ** 0.5) / rate) + 16     # 3 sigma: one round
        r = torch.randint(0, k * k, (m, k), generator=generator, dtype=torch.int32)
        edge = masks.index_select(0, r.view(-1)).view(m, k)
        if split.target == "any":
            hi_t = max_vertices if split.large_target else max_tune_vertices
            t = 2 + (_uniform(m, generator) * (hi_t - 1)).long()
            tbit = torch.where(t <= k, torch.bitwise_left_shift(1, t - 1), 0).to(torch.int16)
        else:
            t = torch.full((m,), 2, dtype=torch.long)
            tbit = 2
        d = bit_bfs(edge, tbit).long()
        if split.target == "two":
            ok = _two_filter(d, generator)
        elif split.target == "onpath":
            ok = _short_path_filter(d, generator) if split.short_path_filter else d < UNREACHABLE
        else:
            ok = torch.ones(m, dtype=torch.bool)
        tried += m
        passed += int(ok.sum())
        good = ok.nonzero().squeeze(1)
        ends = pair_edges.index_select(0, r[good].view(-1)).view(-1, k, 2)
        t, d = t[good], d[good]
        if split.target == "onpath" and len(good):
            t, d = _onpath_targets(ends, max_vertices, generator)
            if not split.large_target:                   # a small-id target is required: redraw the graph
                small = t <= max_tune_vertices
                ends, t, d = ends[small], t[small], d[small]
        parts.append((ends[:left], t[:left], d[:left]))
        left -= len(parts[-1][1])
    ends, t, d = (torch.cat(x) for x in zip(*parts))
    real = ends[..., 0] > 0                              # drop self-loops, keep the draw order
    pos = torch.where(real, real.cumsum(1) - 1, k)
    out = torch.zeros(len(ends), k + 1, 2, dtype=torch.long)
    out.scatter_(1, pos[..., None].expand(-1, -1, 2), ends)
    return out[:, :k], t, d, tried, passed


def _batch(split: Split, batch_size: int, generator, max_vertices: int, max_tune_vertices: int):
    """Rejection sampling with ``n`` held fixed per example, done in bulk, one graph size at a time.

    The examples of size ``n`` receive, in order, the accepted candidates of size ``n`` in draw order.
    Since the candidates are independent and which example gets which ignores their content, each
    example receives an independent draw from the filtered distribution given its ``n`` — the same law
    as redrawing one graph at a time. Returns the batch and the fraction of candidate graphs the
    filters accepted.
    """
    hi = max_vertices if split.large else max_tune_vertices
    n = MIN_VERTICES + (_uniform(batch_size, generator) * (hi - MIN_VERTICES + 1)).long()
    n_sorted, order = n.sort(stable=True)
    counts = torch.bincount(n_sorted, minlength=max_vertices + 1).tolist()
    ends_out = torch.zeros(batch_size, max_vertices, 2, dtype=torch.long)
    target = torch.zeros(batch_size, dtype=torch.long)
    label = torch.zeros(batch_size, dtype=torch.long)
    tried = passed = 0
    start = 0
    for k, c in enumerate(counts):
        if not c:
            continue
        slot = order[start:start + c]
        ends, t, d, tr, pa = _fill(split, k, c, generator, max_vertices, max_tune_vertices)
        ends_out[:, :k].index_copy_(0, slot, ends)
        target.index_copy_(0, slot, t)
        label.index_copy_(0, slot, d)
        tried, passed, start = tried + tr, passed + pa, start + c
    return ends_out, target, label, passed / tried


def make_batch(split: str, batch_size: int, generator: torch.Generator | None = None, *,
               max_vertices: int = MAX_VERTICES, max_tune_vertices: int = MAX_TUNE_VERTICES):
    """A fresh batch of one split: ``(edges [B, max_vertices, 2] long, targets [B] long, labels [B] long)``.

    ``edges`` holds 1-based vertex ids, 0 = padding; ``labels`` is the BFS distance from vertex 1 to the
    target, ``UNREACHABLE`` (15) when there is none. ``max_vertices``/``max_tune_vertices`` are the
    original's 15 and 7 (the "large" and "small" graph sizes); smaller values give a cheaper task with
    the same structure.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: " + ", ".join(SPLIT_NAMES))
    if not MIN_VERTICES <= max_tune_vertices <= max_vertices <= MAX_VERTICES:
        raise ValueError(f"need {MIN_VERTICES} <= max_tune_vertices <= max_vertices <= {MAX_VERTICES}, "
                         f"got {max_tune_vertices} and {max_vertices}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not allowed: expected a positive integer")
    edges, target, label, _ = _batch(SPLITS[split], batch_size, generator, max_vertices, max_tune_vertices)
    return edges, target, label


def acceptance_rate(split: str, samples: int = 20_000, generator: torch.Generator | None = None, *,
                    max_vertices: int = MAX_VERTICES, max_tune_vertices: int = MAX_TUNE_VERTICES) -> float:
    """Fraction of candidate graphs the split's distance filter accepts (how much the filters cost)."""
    return _batch(SPLITS[split], samples, generator, max_vertices, max_tune_vertices)[3]


def label_shares(labels: torch.Tensor) -> dict[int, float]:
    """Fraction of each label value (``UNREACHABLE`` included) in a batch."""
    values, counts = labels.unique(return_counts=True)
    total = counts.sum().item()
    return {int(v): c.item() / total for v, c in zip(values, counts)}
