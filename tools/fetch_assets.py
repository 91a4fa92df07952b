"""Vendor the JavaScript the HTML book needs, so that it works with no internet connection.

MathJax 3 (typesets the math), requirejs and @jupyter-widgets/html-manager (render saved ipywidgets
state) are fetched from the npm registry with ``npm pack`` at pinned versions, checked against their
published sha512 integrity, and unpacked into ``_vendor/`` (git-ignored). ``_config.yml`` lists that
folder in ``html_static_path`` (so it lands in ``_build/html/_static/``) and points Sphinx
(``mathjax_path``) and myst-nb (``nb_ipywidgets_js``) at these copies instead of CDNs.

Why not ``_static/``: Jupyter Book 1.x adds every ``*.js``/``*.css`` file found under a root ``_static/``
folder to every page, which would load all ~90 MathJax components on each page.

Idempotent: when ``_vendor/VERSIONS.json`` matches the pins below and the files are present it
returns at once. Tarballs are kept in ``$REASONING_LAB_ASSET_CACHE`` (default ``~/.cache/reasoning-lab/npm``),
so a rebuild after ``make clean`` does not download again.

    python tools/fetch_assets.py            # fetch if needed
    python tools/fetch_assets.py --force    # unpack again
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "_vendor"
STAMP = VENDOR / "VERSIONS.json"


def _mathjax_member(name: str) -> str | None:
    """es5/ without the bundles we do not load (SVG output, MathML input, the node entry point)."""
    if name == "package/LICENSE":
        return "mathjax/LICENSE"
    if not name.startswith("package/es5/"):
        return None
    rel = name[len("package/es5/"):]
    if "/" not in rel and rel != "tex-chtml.js":
        return None  # the other combined bundles (tex-svg.js, mml-chtml.js, ...)
    if rel.startswith("output/svg"):
        return None
    return "mathjax/" + rel


def _html_manager_member(name: str) -> str | None:
    """The AMD embedder and the fonts/images it references; not the source maps or the non-AMD build."""
    if not name.startswith("package/dist/") or name.endswith(".map"):
        return None
    rel = name[len("package/dist/"):]
    if rel in ("embed.js", "libembed-amd.js"):  # (embed.js.LICENSE.txt lists the bundled licenses; kept)
        return None
    return "html-manager/" + rel


def _requirejs_member(name: str) -> str | None:
    return "requirejs/require.js" if name == "package/require.js" else None


# name, version, sha512 integrity published by the registry, tar member -> path under _vendor/
PACKAGES = [
    ("mathjax", "3.2.2",
     "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
     _mathjax_member),
    # the 1.x line renders the state saved by ipywidgets 8 (widget protocol 2, controls 2.0.0)
    ("@jupyter-widgets/html-manager", "1.0.15",
     "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
     _html_manager_member),
    ("requirejs", "2.3.7",
     "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
     _requirejs_member),
]
# files the book's configuration refers to; if one is missing the vendor folder is rebuilt
REQUIRED = ["mathjax/tex-chtml.js", "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
            "html-manager/embed-amd.js", "requirejs/require.js"]


def pins() -> dict[str, str]:
    return {name: version for name, version, _, _ in PACKAGES}


def up_to_date() -> bool:
    try:
        return json.loads(STAMP.read_text()) == pins() and all((VENDOR / f).is_file() for f in REQUIRED)
    except (OSError, ValueError):
        return False


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reasoning-lab" / "npm"
    return Path(os.environ.get("REASONING_LAB_ASSET_CACHE", default))


def integrity_of(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def tarball(name: str, version: str, integrity: str) -> Path:
    """The package tarball from the cache, or ``npm pack`` it into the cache; checked against ``integrity``."""
    cache = cache_dir()
    path = cache / (name.lstrip("@").replace("/", "-") + f"-{version}.tgz")
    if path.is_file() and integrity_of(path) == integrity:
        return path
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("fetch_assets: `npm` was not found. The HTML book vendors MathJax, requirejs and the "
                 "ipywidgets HTML manager from the npm registry; install Node.js/npm (e.g. "
                 "`apt-get install npm`) and run `make assets` again.")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        proc = subprocess.run([npm, "pack", "--silent", "--json", f"{name}@{version}"], cwd=tmp,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"fetch_assets: `npm pack {name}@{version}` failed (exit {proc.returncode}); is the npm "
                     f"registry reachable?\n{proc.stderr.strip()[-2000:]}")
        (got,) = [p for p in Path(tmp).iterdir() if p.suffix == ".tgz"]
        if integrity_of(got) != integrity:
            sys.exit(f"fetch_assets: {name}@{version} does not match its pinned sha512 integrity; refusing it.")
        os.replace(got, path)
    return path


def unpack(path: Path, select, dest: Path) -> int:
    n = 0
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            target = select(member.name) if member.isfile() else None
            if target is None:
                continue
            out = dest / target
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="unpack again even if up to date")
    args = ap.parse_args(argv)
    if not args.force and up_to_date():
        print(f"assets: up to date ({', '.join(f'{n}@{v}' for n, v in pins().items())})")
        return 0
    # unpack next to the final folder, then swap it in: an interrupted run never leaves half a vendor tree
    staging = VENDOR.with_name(VENDOR.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name, version, integrity, select in PACKAGES:
            n = unpack(tarball(name, version, integrity), select, staging)
            print(f"assets: {name}@{version}: {n} files")
        (staging / "VERSIONS.json").write_text(json.dumps(pins(), indent=1) + "\n")
        old = VENDOR.with_name(VENDOR.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if VENDOR.exists():
            VENDOR.rename(old)
        staging.rename(VENDOR)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(f.stat().st_size for f in VENDOR.rglob("*") if f.is_file())
    print(f"assets: {VENDOR.relative_to(ROOT)} ready ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
