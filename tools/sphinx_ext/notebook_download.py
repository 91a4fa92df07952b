"""Sphinx extension: a ".ipynb" entry in each chapter's download menu, beside the ".md" source.

sphinx-book-theme offers the executed notebook of a MyST chapter for download only when a launch service
(Binder, JupyterHub, Colab, ...) is configured; this book has none. Before the theme builds its header
buttons, this hook copies the notebook myst-nb executed for the page (``_build/jupyter_execute``) into the
HTML's ``_sources/`` and tells the theme about it, so the reader gets the chapter with its outputs.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def add_notebook_download(app, pagename, templatename, context, doctree):
    if doctree is None or "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    if not str(context.get("sourcename", "")).endswith((".md", ".md.txt")):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # sphinx-book-theme adds its header buttons at priority 501
    app.connect("html-page-context", add_notebook_download, priority=450)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
