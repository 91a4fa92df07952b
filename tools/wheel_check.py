"""Check a regular (non-editable) install of the project, used from outside the checkout.

Builds the wheel (``pip wheel``) and checks that it carries every chapter notebook, the saved runs and
tables the chapters read (``book/data/`` as ``reasoning_lab/data/``) and the license. Then it installs it
the way a reader does, ``pip install -c constraints.txt <wheel>``, into a fresh virtual environment of its
own: the dependencies come from the package's metadata alone, nothing from the checkout or its ``.venv``
(pip's download cache only spares the network). From a temporary directory far from the checkout it runs
``reasoning-lab --version``, ``reasoning-lab list`` (every registered experiment must be listed, with its
notebook inside the installed package) and ``reasoning-lab run`` of every chapter at reduced sizes
(``REDUCED``; two at a time), each of which must finish and write its metrics and executed notebook: a
chapter that imports a package the project does not depend on, or reads a file the wheel does not
ship, fails here.

    python tools/wheel_check.py [--keep DIR] [--only NAME ...] [--jobs N]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# every chapter at a size that runs in seconds (most of the time is the kernel's start and imports)
REDUCED = {
    "bilinear-dynamics": ["dims=[16,32]", "steps=40", "seeds=2", "rate_seeds=2"],
    "one-layer-dynamics": ["steps=60"],
    "reversal-curse": ["epochs=3", "seeds=1", "vocab_size=40", "embed_dim=16", "n_layers=1"],
    "reversal-in-context": ["epochs=2", "seeds=1", "embed_dim=16", "n_layers=1"],
    "reversal-fixes": ["epochs=2", "seeds=1", "vocab_size=40", "embed_dim=16", "n_layers=1",
                       "masked_epochs=2"],
    "chain-of-thought": ["epochs=2", "seeds=1", "vocab_size=80", "embed_dim=16", "n_layers=1"],
    "chain-related-tokens": ["epochs=2", "seeds=1", "embed_dim=16", "n_layers=1"],
    "capacity": ["n_profiles=40", "budgets=[30000]", "exposures=2"],
    "capacity-probes": ["n_profiles=100", "n_layers=1", "embed_dim=16", "exposures=2", "probe_questions=200"],
    "bfs-handcrafted": ["test_graphs=16", "perturb_seeds=1", "perturb_steps=2", "perturb_batch=8"],
    "shortest-paths": ["max_vertices=5", "max_tune_vertices=4", "n_layers=1", "embed_dim=16", "ff_dim=32",
                       "warmup_steps=2", "pretrain_steps=12", "switch_step=6", "finetune_steps=2",
                       "eval_batch=64"],
}


def sh(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode:
        raise SystemExit(f"wheel check FAILED: {' '.join(map(str, cmd))} exited {res.returncode}\n"
                         f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def expected_experiments() -> list[str]:
    sys.path.insert(0, str(ROOT / "lib"))
    from reasoning_lab.experiments import registry

    return list(registry.load_studies())


def run_reduced(cli: str, name: str, where: Path, env: dict) -> tuple[str, float, str | None]:
    """``reasoning-lab run NAME`` at its reduced sizes in ``where``; (name, seconds, problem or None)."""
    out = where / name
    args = [cli, "run", name, *[a for kv in REDUCED[name] for a in ("-p", kv)], "--out", str(out)]
    t0 = time.monotonic()
    res = subprocess.run(args, cwd=where, env=env, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - t0
    if res.returncode:
        tail = (res.stdout + res.stderr).strip().splitlines()[-12:]
        return name, took, f"exited {res.returncode}:\n      " + "\n      ".join(tail)
    if not (out / "metrics.json").is_file() or not (out / f"{name}.ipynb").is_file():
        return name, took, "left no metrics.json or executed notebook"
    return name, took, None


def check(work: Path, only: list[str], jobs: int) -> list[str]:
    py = sys.executable
    notes = []
    dist = work / "dist"
    sh([py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)], cwd=work)
    (wheel,) = dist.glob("reasoning_lab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(Path(n).name for n in names if n.startswith("reasoning_lab/notebooks/") and n.endswith(".md"))
    sources = sorted(p.name for p in (ROOT / "notebooks").glob("*.md"))
    if shipped != sources:
        raise SystemExit(f"wheel check FAILED: {wheel.name} ships notebooks {shipped}, expected {sources}")
    data = ROOT / "book" / "data"
    wanted = sorted(str(p.relative_to(data)) for p in data.rglob("*")
                    if p.is_file() and p.suffix in (".csv", ".json", ".png"))
    packed = sorted(n.removeprefix("reasoning_lab/data/") for n in names if n.startswith("reasoning_lab/data/"))
    if packed != wanted:
        raise SystemExit(f"wheel check FAILED: {wheel.name} ships data {packed}, expected book/data's {wanted}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        raise SystemExit(f"wheel check FAILED: {wheel.name} has no LICENSE in its metadata")
    notes.append(f"{wheel.name}: {len(shipped)} notebooks, {len(packed)} data files, LICENSE")

    # a fresh environment with pip, isolated from the checkout and its .venv (no system site-packages)
    venv = work / "venv"
    sh([py, "-m", "venv", str(venv)], cwd=work)
    vpy = venv / "bin" / "python"
    t0 = time.monotonic()
    sh([str(vpy), "-m", "pip", "install", "-q", "--no-compile", "-c", str(ROOT / "constraints.txt"), str(wheel)],
       cwd=work, timeout=1800)
    notes.append(f"pip install -c constraints.txt {wheel.name} into a fresh venv: {time.monotonic() - t0:.0f} s")

    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND") and not k.startswith("REASONING_LAB_")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", REASONING_LAB_THREADS="1",
               REASONING_LAB_QUIET="1")
    cli = str(venv / "bin" / "reasoning-lab")
    where = sh([str(vpy), "-c", "import sys, reasoning_lab, reasoning_lab.experiments.registry as r; "
                "print(reasoning_lab.__file__); print(r.NOTEBOOKS); print(r.DATA); "
                "print(any('/.venv/' in p or p.startswith(sys.argv[1]) for p in sys.path))", str(ROOT)],
               cwd=elsewhere, env=env).stdout.split()
    if where[-1] != "False" or not all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where[:-1]):
        raise SystemExit(f"wheel check FAILED: the package, its notebooks or its data come from {where[:-1]} "
                         f"(checkout on sys.path: {where[-1]}), not from the fresh environment {venv}")
    version = sh([cli, "--version"], cwd=elsewhere, env=env).stdout.strip()
    listing = sh([cli, "list"], cwd=elsewhere, env=env).stdout
    listed = [line.split()[0] for line in listing.splitlines() if line and not line.startswith(" ")]
    expected = expected_experiments()
    if listed != expected:
        raise SystemExit(f"wheel check FAILED: `reasoning-lab list` outside the checkout listed {listed}, "
                         f"expected {expected}")
    if set(REDUCED) != set(expected):
        raise SystemExit(f"wheel check FAILED: reduced sizes for {sorted(REDUCED)}, experiments {expected}")
    notes.append(f"{version}: `list` shows all {len(listed)} experiments, notebooks from {where[1]}")

    todo = only or expected
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(lambda n: run_reduced(cli, n, elsewhere, env), todo))
    failed = [(n, why) for n, _, why in results if why]
    if failed:
        raise SystemExit("wheel check FAILED: chapters that do not run from a regular install:\n" +
                         "\n".join(f"  {n}: {why}" for n, why in failed))
    notes.append(f"`reasoning-lab run` of all {len(todo)} chapters at reduced sizes from {elsewhere.name}/: "
                 f"{time.monotonic() - t0:.0f} s wall (" +
                 ", ".join(f"{n} {s:.0f} s" for n, s, _ in results) + ")")
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--only", nargs="+", default=[], choices=sorted(REDUCED), help="run only these chapters")
    ap.add_argument("--jobs", type=int, default=2, help="chapters run at once (default 2)")
    args = ap.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        notes = check(args.keep.resolve(), args.only, args.jobs)
    else:
        with tempfile.TemporaryDirectory(prefix="wheel-check-") as tmp:
            notes = check(Path(tmp), args.only, args.jobs)
    for n in notes:
        print("  " + n)
    print("wheel check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
