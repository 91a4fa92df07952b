"""How the project is installed and opened: pyproject, environment.yml, jupytext pairing, license, and a
regular (non-editable) install used from outside the checkout."""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def make_install_extras() -> set[str]:
    line = next(l for l in (ROOT / "Makefile").read_text().splitlines() if "pip install" in l and " -e " in l)
    return set(re.search(r'-e "?\.\[([^\]]+)\]', line).group(1).split(","))


def test_environment_yml_installs_what_make_install_does():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert sorted(re.split(r"[=<>]", d)[0] for d in conda) == ["pip", "python"]
    python = next(d for d in conda if d.startswith("python"))
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-c constraints.txt" in pip
    project = [l for l in pip if l.startswith("-e ")]
    assert len(project) == 1, pip
    extras = set(re.search(r"\.\[([^\]]+)\]", project[0]).group(1).split(","))
    assert extras == make_install_extras()
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    # nothing else is named twice: every dependency comes from pyproject.toml through the project itself
    assert all(l.startswith(("-c ", "-e ", "--extra-index-url")) for l in pip), pip


def test_lab_extra_is_installed_and_pinned():
    assert "lab" in make_install_extras()
    assert any(d.startswith("jupyterlab") for d in PYPROJECT["project"]["optional-dependencies"]["lab"])
    pins = [l.split("==") for l in (ROOT / "constraints.txt").read_text().splitlines() if "==" in l]
    assert "jupyterlab" in dict(pins)


def test_license_is_spdx_with_file():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "The Reasoning Lab authors" in text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"].startswith("1.2") and cff["license"] == "MIT"
    assert cff["version"] == project["version"] and cff["title"].startswith("Reasoning Lab")
    build = PYPROJECT["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in build)


def test_jupytext_pairs_chapters_with_ipynb():
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    path = find_jupytext_configuration_file(str(ROOT / "notebooks"))
    assert Path(path) == ROOT / "jupytext.toml"
    config = load_jupytext_configuration_file(path)
    formats = config.default_formats(str(ROOT / "notebooks" / "reversal-curse.md"))
    assert set(formats.split(",")) == {"ipynb", "md:myst"}


def test_notebook_location(monkeypatch, tmp_path):
    from reasoning_lab.experiments import locations, registry

    assert locations.in_checkout() and registry.NOTEBOOKS == ROOT / "notebooks"
    monkeypatch.setattr(locations, "CHECKOUT", tmp_path)      # as seen from an installed package
    assert locations.notebook_dir() == locations.PACKAGE / "notebooks"


def test_regular_install_runs_every_chapter_outside_the_checkout(capsys):
    """pip install -c constraints.txt of the wheel into an isolated venv, every chapter run from another
    folder at reduced sizes (tools/wheel_check.py)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import wheel_check

    assert wheel_check.main([]) == 0
    out = capsys.readouterr().out
    n = len(list((ROOT / "notebooks").glob("*.md")))
    assert f"{n} notebooks" in out and f"all {n} experiments" in out and "wheel check passed" in out
    assert f"of all {n} chapters at reduced sizes" in out and "into a fresh venv" in out


def test_docs_say_what_the_environment_and_the_lab_do():
    """What README.md and the book say about installing and running the chapters matches the product:
    environment.yml takes PyTorch from PyPI (no CUDA channel), the torch pin does not keep CUDA wheels
    away on Linux, and chapters open as notebooks through `make lab` (a plain `jupyter lab` opens them
    as text)."""
    docs = {p.name: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    for name, text in docs.items():
        flat = " ".join(text.split())
        assert "CUDA channel" not in flat, f"{name}: environment.yml has no CUDA channel"
        assert not re.search(r"not pull CUDA|keeps? CUDA wheels away", flat), f"{name}: the pin keeps no CUDA away"
        for sentence in re.split(r"(?<=[.;:])\s", flat):
            if "jupyter lab`" in sentence and "make lab" not in sentence:
                assert "as text" in sentence, f"{name}: {sentence!r}"
