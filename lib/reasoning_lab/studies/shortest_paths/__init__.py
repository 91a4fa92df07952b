"""Part IV: shortest paths — the task's data, the hand-built BFS transformer and the learned model."""
from .data import (MAX_TUNE_VERTICES, MAX_VERTICES, SPLIT_NAMES, SPLITS, TEST_SPLITS, UNREACHABLE, adjacency,
                   bfs, distances, label_shares, make_batch, random_edges)
from .handcrafted import HandcraftedBFS
from .model import PathTransformer

__all__ = ["MAX_TUNE_VERTICES", "MAX_VERTICES", "SPLIT_NAMES", "SPLITS", "TEST_SPLITS", "UNREACHABLE", "adjacency",
           "bfs", "distances", "label_shares", "make_batch", "random_edges", "HandcraftedBFS", "PathTransformer"]
