"""Sphinx extension: the ``{preset-table}`` directive renders the table of full-size presets from the
experiments' declarations (``reasoning_lab.experiments.presets``), so that the page cannot drift from
the code."""
from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import Directive


class PresetTable(Directive):
    has_content = False

    def run(self):
        from reasoning_lab.experiments import presets

        container = nodes.container(classes=["preset-table"])
        self.state.nested_parse(self._lines(presets.book_markdown()), self.content_offset, container)
        return [container]

    @staticmethod
    def _lines(text: str):
        from docutils.statemachine import StringList

        return StringList(text.splitlines(), source="reasoning_lab.experiments.presets")


def setup(app):
    app.add_directive("preset-table", PresetTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
