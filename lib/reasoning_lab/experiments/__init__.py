"""Experiments: the registry of notebooks and their parameter rules, the in-kernel session
(``lab.start``), the papermill runner and the command line."""
from .registry import REGISTRY, ROOT, Experiment, available, get, load_studies, notebook_parameters, register

__all__ = ["REGISTRY", "ROOT", "Experiment", "available", "get", "load_studies", "notebook_parameters", "register"]
