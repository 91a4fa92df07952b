"""The publishing tools: vendored-asset selection, the toc walk, the self-contained slider, and the
real-browser checker itself on two small pages (one good, one broken in known ways).

The browser part runs when Chromium and the vendored MathJax (``make assets``) are present."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import reasoning_lab as lab  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import browser_check  # noqa: E402
import fetch_assets  # noqa: E402


def test_asset_selection_keeps_what_the_book_loads():
    mj = fetch_assets._mathjax_member
    assert mj("package/es5/tex-chtml.js") == "mathjax/tex-chtml.js"
    assert mj("package/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff") == \
        "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"
    assert mj("package/es5/input/tex/extensions/physics.js") == "mathjax/input/tex/extensions/physics.js"
    assert mj("package/es5/tex-svg.js") is None and mj("package/es5/output/svg.js") is None
    assert mj("package/ts/core/MathItem.ts") is None
    hm = fetch_assets._html_manager_member
    assert hm("package/dist/embed-amd.js") == "html-manager/embed-amd.js"
    assert hm("package/dist/embed-amd.js.map") is None and hm("package/dist/embed.js") is None
    # every file the configuration names is produced by the selection
    produced = {"mathjax/tex-chtml.js", "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
                "html-manager/embed-amd.js", fetch_assets._requirejs_member("package/require.js")}
    assert set(fetch_assets.REQUIRED) <= produced


def test_config_points_at_vendored_files():
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert "_vendor" in cfg["html_static_path"]
    vendored = {cfg["mathjax_path"], *cfg["nb_ipywidgets_js"]}
    assert not any(v.startswith(("http:", "https:", "//")) for v in vendored)
    static = [ROOT / "tools" / "static" / v for v in vendored]
    assert {v for v, p in zip(vendored, static) if not p.exists()} <= set(fetch_assets.REQUIRED)


def test_toc_pages_in_reading_order(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nparts:\n"
                   "  - caption: One\n    chapters:\n      - file: notebooks/a\n"
                   "        sections:\n          - file: notebooks/a2.md\n"
                   "  - caption: Two\n    chapters:\n      - file: book/b\n")
    assert browser_check.toc_pages(toc) == ["book/intro", "notebooks/a", "notebooks/a2", "book/b"]


def _player(changing: bool) -> str:
    fig, ax = plt.subplots(figsize=(3, 2))
    (line,) = ax.plot([0, 1], [0, 0])
    ax.set_ylim(-1, 4)

    def update(i):
        if changing:
            line.set_ydata([0, i])

    return lab.plots.scrubber(fig, update, range(4)).data


def test_scrubber_is_self_contained():
    html = _player(changing=True)
    assert "font-awesome" not in html and "://" not in html.replace("data:image", "")
    assert 'class="fa' not in html and "\u25b6" in html  # play button drawn as text
    assert 'class="anim-slider"' in html and html.count("data:image/png;base64") == 4


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>
<script defer src="_static/mathjax/tex-chtml.js"></script></head>
<body><main><article><h1>{title}</h1>
<p>{'A paragraph of prose that explains what the reader sees on this page. ' * 4}</p>
{body}</article></main></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if browser_check.find_browser() is None:
        pytest.skip("no Chromium installed")
    if not (ROOT / "_vendor" / "mathjax" / "tex-chtml.js").is_file():
        pytest.skip("vendored MathJax missing (run `make assets`)")
    d = tmp_path_factory.mktemp("site")
    (d / "_static").mkdir()
    (d / "_static" / "mathjax").symlink_to(ROOT / "_vendor" / "mathjax")
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 1])
    fig.savefig(d / "fig.png")
    plt.close(fig)
    (d / "index.html").write_text(_page("Index", ""))
    math = r'<p>Inline <span class="math">\(\sum_i x_i^2\)</span>.</p><div class="math">\[e^{i\pi}+1=0\]</div>'
    (d / "good.html").write_text(_page("Good", math + '<div class="cell"><div class="cell_output">'
                                       '<img src="fig.png"></div></div>' + _player(changing=True)))
    (d / "_sources").mkdir()
    (d / "_sources" / "bad.ipynb").write_text('{"cells": [{"cell_type": "code", "outputs": []}]}')
    (d / "bad.html").write_text(_page("Bad", '<div class="cell"><div class="cell_output">'
                                      '<img src="missing.png"><div class="output traceback">'
                                      'Traceback (most recent call last): ValueError</div></div></div>'
                                      '<p>so the score is $ s = a\\,\\mathrm{REACH}_v[j]$ steps.</p>'
                                      '<pre style="overflow-x: auto">' + "x" * 300 + '</pre>'
                                      '<a href="_sources/bad.ipynb">bad.ipynb</a>'
                                      + _player(changing=False)
                                      + '<script>fetch("http://cdn.example.com/x.js").catch(() => 0);</script>'))
    return d


def test_browser_check_passes_a_good_page(site, capsys):
    rc = browser_check.main(["--html", str(site), "--page", "good", "--screenshots", str(site / "shots")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "math 2/2" in out and "sliders 1 (dragged)" in out and "figures" in out   # opens on its last frame
    png = (site / "shots" / "good.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_browser_check_catches_broken_pages(site, capsys):
    rc = browser_check.main(["--html", str(site), "--page", "bad", "--page", "absent",
                             "--screenshots", str(site / "shots")])
    out = capsys.readouterr().out
    assert rc == 1
    for expected in ("image(s) did not load", "error output(s) from notebook execution",
                     "the picture did not change", "request outside the book: http://cdn.example.com/x.js",
                     "(missing pages): absent", "raw TeX or a stray $ in the text", "\\mathrm",
                     "scrolls sideways", "_sources/bad.ipynb has 0 output(s)"):
        assert expected in out, (expected, out)
