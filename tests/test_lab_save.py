"""Saving a chapter in JupyterLab leaves its MyST source unchanged.

JupyterLab saves through jupytext's contents manager (the one `make lab` runs, configured by jupytext.toml).
Each chapter is opened as a notebook through it, given what a session in JupyterLab adds (outputs and
execution counts, the kernel's spec and language metadata, the values jupyterlab-myst records for the prose's
inline expressions, cell ids, the UI's per-cell flags) and saved back: the .md must be byte for byte what
it was. (tools/lab_check.py does the same with a real Ctrl-S in a browser, for one chapter.)"""
from __future__ import annotations

import asyncio
import difflib
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("*.md"))


def lab_session_edits(nb: dict) -> None:
    """What running and viewing a notebook in JupyterLab changes in it, short of editing it."""
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.2", "mimetype": "text/x-python",
                                       "file_extension": ".py", "codemirror_mode": {"name": "ipython"}}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    # the running kernel's spec, in the order JupyterLab writes it
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": spec.display_name,
                                    "language": spec.language}
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"
        if cell["cell_type"] == "code":
            cell["execution_count"] = i + 1
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
            cell["metadata"]["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
            cell["metadata"]["scrolled"] = True
        elif "{eval}`" in cell["source"]:
            cell["metadata"]["user_expressions"] = [
                {"expression": "x", "result": {"status": "ok", "data": {"text/plain": "1"}, "metadata": {}}}]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_saving_in_jupyterlab_leaves_the_chapter_unchanged(chapter, tmp_path):
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext import build_async_jupytext_contents_manager_class

    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / chapter.name
    shutil.copy(chapter, copy)
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(tmp_path))
    path = f"notebooks/{chapter.name}"

    async def open_run_save():
        model = await manager.get(path, content=True, type="notebook")
        lab_session_edits(model["content"])
        await manager.save({"type": "notebook", "format": "json", "content": model["content"]}, path)

    asyncio.run(open_run_save())
    before, after = chapter.read_text(), copy.read_text()
    diff = [d for d in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if d[:1] in "+-" and d[:3] not in ("+++", "---")]
    assert before == after, f"saving changed {len(diff)} line(s) of {chapter.name}: {diff[:6]}"
    assert (tmp_path / "notebooks" / f"{chapter.stem}.ipynb").is_file()   # the pairing still works
