"""Experiments: the registry of notebooks with their parameter rules and claims, the in-kernel session
(``lab.start``), the papermill runner and the command line."""
from .registry import (DATA, REGISTRY, ROOT, Claim, Experiment, available, get, load_studies, notebook_parameter_info,
                       notebook_parameters, register)

__all__ = ["DATA", "REGISTRY", "ROOT", "Claim", "Experiment", "available", "get", "load_studies", "notebook_parameter_info",
           "notebook_parameters", "register"]
