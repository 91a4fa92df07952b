"""Synthetic tasks: each module builds token tensors for one family of experiments."""
