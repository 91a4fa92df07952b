"""Sphinx extension: a ".ipynb" entry in each chapter's download menu, beside the ".md" source, holding
the executed notebook with its outputs.

sphinx-book-theme offers the executed notebook of a MyST chapter for download only when a launch service
(Binder, JupyterHub, Colab, ...) is configured; this book has none. Before the theme builds its header
buttons, this hook writes the chapter's executed notebook into the HTML's ``_sources/`` and tells the
theme about it. The notebook comes from the execution cache the book was built from (the source read as
the build reads it, merged with the cached outputs and widget state): the copy myst-nb leaves in
``_build/jupyter_execute`` is the source without its outputs when the outputs came from the cache.
"""
from __future__ import annotations

from pathlib import Path


def executed_notebook(app, pagename: str):
    """The page's notebook with the outputs the book shows, or None (not a notebook, or not cached)."""
    import nbformat
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook

    source = Path(app.env.doc2path(pagename))
    cache_path = app.config.nb_execution_cache_path
    if source.suffix != ".md" or not cache_path:
        return None
    nb = read_myst_markdown_notebook(source.read_text(encoding="utf8"), path=source)
    try:
        _, merged = get_cache(cache_path).merge_match_into_notebook(nb)
    except KeyError:
        return None
    return nbformat.writes(merged)


def add_notebook_download(app, pagename, templatename, context, doctree):
    if doctree is None or "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    if not str(context.get("sourcename", "")).endswith((".md", ".md.txt")):
        return
    text = executed_notebook(app, pagename)
    if text is None:
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf8")
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # sphinx-book-theme adds its header buttons at priority 501
    app.connect("html-page-context", add_notebook_download, priority=450)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
