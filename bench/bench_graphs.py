"""Speed of the shortest-path data generator: vectorized tensors vs one Python graph at a time.

    python bench/bench_graphs.py [--split pretrain] [--seconds 3] [--threads 1]

Both generators implement the same semantics (n uniform in [3, 15], n random edge attempts, the
split's accept/reject filter with n held fixed, BFS labels, on-path targets with P(k) ∝ k); the
reference below is written the obvious way — random.randint, Python sets, a deque BFS — like the
original code. Prints samples/s of each and the ratio, measured in the same process, interleaved.
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import torch  # noqa: E402

from reasoning_lab.studies.shortest_paths import UNREACHABLE, make_batch  # noqa: E402
from _timing import rate  # noqa: E402  (bench/ is on sys.path when a script runs)

MIN_N, MAX_N, MAX_TUNE_N = 3, 15, 7


def random_graph(n: int, rng: random.Random):
    """n edge attempts between uniform vertex ids; self-loops dropped, repeats kept, (min, max) order."""
    edges, adj = [], [set() for _ in range(n + 1)]
    for _ in range(n):
        a, b = rng.randint(1, n), rng.randint(1, n)
        if a != b:
            edges.append((min(a, b), max(a, b)))
            adj[a].add(b)
            adj[b].add(a)
    return edges, adj


def bfs_path(adj, target: int):
    """Vertices of the queue-BFS tree path 1 -> target (neighbours in increasing id), [] if none."""
    parent = {1: None}
    queue = deque([1])
    while queue:
        x = queue.popleft()
        for y in sorted(adj[x]):
            if y not in parent:
                parent[y] = x
                if y == target:
                    path = [y]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return path[::-1]
                queue.append(y)
    return []


def distance(adj, target: int) -> int:
    path = bfs_path(adj, target) if target < len(adj) else []
    return len(path) - 1 if path else UNREACHABLE


def reference_example(split: str, rng: random.Random):
    """One example of ``split`` as (edges, target, label)."""
    large = split not in ("finetune", "test-any-small-graphs")
    n = rng.randint(MIN_N, MAX_N if large else MAX_TUNE_N)
    while True:
        edges, adj = random_graph(n, rng)
        if split == "pretrain":
            d = distance(adj, 2)
            if 6 <= d < UNREACHABLE or (d < 6 and rng.random() < 1 / (2 * (6 - d))) or \
                    (d == UNREACHABLE and rng.random() < 1 / UNREACHABLE):
                return edges, 2, d
        elif split.startswith("test-any"):
            t = rng.randint(2, MAX_N if split == "test-any-large" else MAX_TUNE_N)
            return edges, t, distance(adj, t)
        else:
            path = bfs_path(adj, 2)
            if not path:
                continue
            d = len(path) - 1
            if split == "finetune" and d < 4 and rng.random() >= 1 / (3 * (4 - d)):
                continue
            k = rng.choices(range(1, d + 1), weights=range(1, d + 1))[0]
            if split == "test-onpath-small-target" and path[k] > MAX_TUNE_N:
                continue
            return edges, path[k], k


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="pretrain")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement (each is done twice)")
    ap.add_argument("--batch", type=int, default=32768, help="vectorized batch size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    make_batch(args.split, 1024, gen)          # warm-up

    def python_chunk():
        for _ in range(200):
            reference_example(args.split, rng)
        return 200

    def vector_chunk():
        make_batch(args.split, args.batch, gen)
        return args.batch

    py, vec = [], []
    for _ in range(2):                          # interleaved, so both see the same machine load
        py.append(rate(python_chunk, args.seconds / 2))
        vec.append(rate(vector_chunk, args.seconds / 2))
    py_rate, vec_rate = max(py), max(vec)
    print(f"split {args.split}, torch threads {args.threads}")
    print(f"python reference : {py_rate:12,.0f} samples/s")
    print(f"vectorized       : {vec_rate:12,.0f} samples/s")
    print(f"ratio            : {vec_rate / py_rate:12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
