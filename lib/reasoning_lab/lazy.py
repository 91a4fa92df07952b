"""Names a package exports but imports only when first used (PEP 562 module ``__getattr__``).

A package's ``__init__`` lists what it exports and where each name lives; nothing is imported until a
name is read. Reading the registry (the command line, a sweep's job before its kernel starts) then
costs no PyTorch import, while ``lab.Transformer`` or ``from reasoning_lab import fit`` work as before.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable


def exports(package: str, where: dict[str, tuple[str, ...]]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``. ``where`` maps a module (relative to the package) to
    the names it exports through the package; any other name is looked up as a submodule."""
    home = {name: module for module, names in where.items() for name in names}

    def __getattr__(name: str):
        if name in home:
            value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        else:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":      # the submodule exists; something it imports not
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(home))

    return __getattr__, __dir__
