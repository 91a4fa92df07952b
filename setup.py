"""Build hook: a wheel (any non-editable install) carries the chapter notebooks and the saved runs and tables
they read as package data, in ``reasoning_lab/notebooks/`` and ``reasoning_lab/data/``, so that
``reasoning-lab`` runs every chapter outside a checkout. An editable install reads the checkout's
``notebooks/`` and ``book/data/`` folders instead (see ``reasoning_lab.experiments.locations``)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# what the saved runs under book/data/ hold for the chapters (not their checkpoints)
DATA_SUFFIXES = (".csv", ".json", ".png")


class build_py_with_notebooks(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        sources = sorted((HERE / "notebooks").glob("*.md"))
        if not sources:
            raise SystemExit("no notebooks/*.md to ship: build from a checkout or a complete sdist")
        dest = Path(self.build_lib) / "reasoning_lab" / "notebooks"
        if dest.is_dir():  # a reused build folder must not ship a chapter that no longer exists
            shutil.rmtree(dest)
        self.mkpath(str(dest))
        for src in sources:
            self.copy_file(str(src), str(dest / src.name))
        self.copy_file(str(HERE / "_toc.yml"), str(dest / "_toc.yml"))   # the book's order of the chapters
        data = Path(self.build_lib) / "reasoning_lab" / "data"
        if data.is_dir():
            shutil.rmtree(data)
        for src in sorted((HERE / "book" / "data").rglob("*")):
            if src.is_file() and src.suffix in DATA_SUFFIXES and "checkpoints" not in src.parts:
                target = data / src.relative_to(HERE / "book" / "data")
                self.mkpath(str(target.parent))
                self.copy_file(str(src), str(target))


setup(cmdclass={"build_py": build_py_with_notebooks})
