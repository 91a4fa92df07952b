"""Part IV: shortest paths — the task's data, the hand-built BFS transformer and the learned model."""
from ...lazy import exports

# loaded on first use: the registry reads experiment.py without them
__getattr__, __dir__ = exports(__name__, {
    "data": ("MAX_TUNE_VERTICES", "MAX_VERTICES", "SPLIT_NAMES", "SPLITS", "TEST_SPLITS", "UNREACHABLE",
             "adjacency", "bfs", "distances", "label_shares", "make_batch", "random_edges"),
    "handcrafted": ("HandcraftedBFS",), "model": ("PathTransformer",),
})

__all__ = ["MAX_TUNE_VERTICES", "MAX_VERTICES", "SPLIT_NAMES", "SPLITS", "TEST_SPLITS", "UNREACHABLE", "adjacency",
           "bfs", "distances", "label_shares", "make_batch", "random_edges", "HandcraftedBFS", "PathTransformer"]
