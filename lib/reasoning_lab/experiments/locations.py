"""Where the experiment notebooks and the saved runs they read live.

In a checkout (and an editable install) they are the MyST sources in the checkout's ``notebooks/``
folder, the ones the book builds, and the saved runs and tables in ``book/data/``. A regular install
(``pip install .``, a wheel) carries a copy of both inside the package, ``reasoning_lab/notebooks/`` and
``reasoning_lab/data/``, written by the build (see ``setup.py``).
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
CHECKOUT = PACKAGE.parents[1]          # lib/reasoning_lab -> the repository root, in a checkout
PACKAGED_NOTEBOOKS = PACKAGE / "notebooks"
PACKAGED_DATA = PACKAGE / "data"


def in_checkout() -> bool:
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "notebooks").is_dir()


def notebook_dir() -> Path:
    """The folder holding ``<experiment>.md``: the checkout's ``notebooks/`` if there is one, else the
    package's own copy."""
    return CHECKOUT / "notebooks" if in_checkout() else PACKAGED_NOTEBOOKS


def data_dir() -> Path:
    """The folder of saved runs and tables the chapters read (``chain-sweep.csv``, ``capacity-cpu-full/``,
    ...): the checkout's ``book/data/`` if there is one, else the package's own copy."""
    return CHECKOUT / "book" / "data" if in_checkout() else PACKAGED_DATA
