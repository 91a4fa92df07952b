"""Build hook: a wheel (any non-editable install) carries the chapter notebooks as package data, in
``reasoning_lab/notebooks/``, so that ``reasoning-lab`` works outside a checkout. An editable install reads
the checkout's ``notebooks/`` folder instead (see ``reasoning_lab.experiments.locations``)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


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


setup(cmdclass={"build_py": build_py_with_notebooks})
