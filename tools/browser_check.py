"""Open every page of the built HTML book in headless Chromium and check what a reader would see.

For each page of ``_toc.yml`` (served from ``_build/html`` by a loopback-only HTTP server, with every other
host unresolvable so that anything fetched from a CDN fails) it checks:

- the page has a title and prose, and no error output (tracebacks) from notebook execution;
- every math element was typeset by MathJax (an ``mjx-container``, no ``mjx-merror``), and no raw TeX
  (a ``$``, a ``\\command``, ``_{`` or ``^{``) is left in the text outside typeset math and code;
- the text column is as wide as the figures are sized for (``reasoning_lab.plots.BOOK_COLUMN_PX``) and
  nothing is wider than it: no code block, output, table, figure or display equation scrolls sideways
  or spills past its edge at the 1280-px window;
- every image loaded (non-zero ``naturalWidth``), and a notebook page shows at least one figure;
- saved ipywidgets were rendered by the HTML manager;
- a notebook page's download menu offers the executed notebook, with its outputs;
- each static slider (matplotlib's JavaScript player, ``lab.plots.scrubber``) opens on its last frame and
  works: the mouse drags it from the first frame to its end and the frame changes, then clicking
  "First frame" brings back the first one;
- no JavaScript exception, console error, failed or external request;

and saves a full-page screenshot of each page in ``_build/screenshots/``. It also fails if myst-nb left an
execution report (``_build/html/reports/**/*.err.log``).

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``), so no
third-party package is needed. Without a Chromium binary it prints one line saying the check was skipped
and exits 0.

    python tools/browser_check.py [--html _build/html] [--toc _toc.yml] [--screenshots _build/screenshots]
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))
from reasoning_lab.plots import BOOK_COLUMN_PX  # noqa: E402  (the column the figures are sized for)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
VIEWPORT = (1280, 900)
MAX_SHOT_HEIGHT = 12000  # px; longer pages are cut in the screenshot (not in the checks)


# ----------------------------------------------------------------------------------------------- pages

def toc_pages(toc_path: Path) -> list[str]:
    """Document names in ``_toc.yml`` order (root first), e.g. ``book/intro``, ``notebooks/capacity``."""
    import yaml

    toc = yaml.safe_load(toc_path.read_text())
    names = [toc["root"]]

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "file" in node:
                names.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))

    walk(toc)
    return [str(Path(n).with_suffix("")) if Path(n).suffix in (".md", ".ipynb") else n for n in names]


def download_problems(html_dir: Path, link: str | None) -> list[str]:
    """A chapter's download menu offers its executed notebook (the page's link to an ``.ipynb``, under
    ``_sources/``) with outputs, a figure among them, not the bare source."""
    import json
    from urllib.parse import unquote

    if not link:
        return ["no .ipynb in the page's download menu"]
    name = unquote(link).lstrip("/")
    path = html_dir / name
    if not path.is_file():
        return [f"the download menu's notebook {name} does not exist"]
    cells = [c for c in json.loads(path.read_text()).get("cells", []) if c.get("cell_type") == "code"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    if not outputs or not any("image/png" in o.get("data", {}) for o in outputs):
        return [f"the downloadable notebook {name} has {len(outputs)} output(s) and no "
                "figure: not the executed notebook"]
    return []


def execution_reports(html_dir: Path) -> list[Path]:
    return sorted((html_dir / "reports").rglob("*.err.log")) if (html_dir / "reports").is_dir() else []


# ------------------------------------------------------------------------------------- DevTools client

def _high_fd(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class DevTools:
    """A minimal Chrome DevTools protocol client over ``--remote-debugging-pipe`` (NUL-separated JSON
    on file descriptors 3 (commands) and 4 (replies and events) of the browser process)."""

    def __init__(self, binary: str, profile: str, extra_args=()):
        # pipe ends the browser inherits are moved to descriptors >= 10 so that they cannot be 3 or 4
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        cmd_r, resp_w = (_high_fd(fd) for fd in (cmd_r, resp_w))
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
                "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", *extra_args, "about:blank"]
        # the shell moves the two pipe ends to descriptors 3 and 4, where Chromium expects them
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{cmd_r} 4>&{resp_w} {cmd_r}<&- {resp_w}>&-', "browser", *args],
            pass_fds=(cmd_r, resp_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        os.close(cmd_r)
        os.close(resp_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._events: queue.Queue = queue.Queue()
        self._cv = threading.Condition()
        self._stderr_tail: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self):
        buf = b""
        with os.fdopen(self._resp_r, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                buf += chunk
                *msgs, buf = buf.split(b"\0")
                for raw in msgs:
                    msg = json.loads(raw)
                    if "id" in msg:
                        with self._cv:
                            self._replies[msg["id"]] = msg
                            self._cv.notify_all()
                    else:
                        self._events.put(msg)
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self._stderr_tail = (self._stderr_tail + [line.decode(errors="replace").rstrip()])[-20:]

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._next_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or getattr(self, "_closed", False) or self.proc.poll() is not None:
                    raise RuntimeError(f"browser gave no reply to {method} "
                                       f"(stderr: {' | '.join(self._stderr_tail[-5:])})")
                self._cv.wait(min(left, 0.5))
            reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def events(self):
        """Events received so far (drains the queue)."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def wait_event(self, method: str, session: str, timeout: float, keep: list):
        """Wait for ``method`` on ``session``; every event seen meanwhile is appended to ``keep``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self._events.get(timeout=0.2)
            except queue.Empty:
                continue
            keep.append(ev)
            if ev.get("method") == method and ev.get("sessionId") == session:
                return True
        return False

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)


# ------------------------------------------------------------------------------------------ page checks

# Runs in the page after its load event; resolves to a JSON-able report.
PAGE_CHECK_JS = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (cond, ms) => {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) { try { if (cond()) return true; } catch (e) {} await sleep(50); }
    return !!cond();
  };
  const r = {};
  const main = document.querySelector('main') || document.body;
  const h1 = main.querySelector('h1');
  r.title = document.title;
  r.h1 = h1 ? h1.textContent.replace(/[#¶]/g, '').trim() : '';
  r.prose_chars = [...main.querySelectorAll('article p, article li')]
      .filter(p => !p.closest('.cell_output, .output, .highlight'))
      .reduce((n, p) => n + p.textContent.trim().length, 0);
  r.code_cells = main.querySelectorAll('div.cell').length;

  // notebook execution errors rendered on the page
  r.tracebacks = main.querySelectorAll('.output.traceback, .output.error').length;
  r.traceback_text = [...main.querySelectorAll('.cell_output')]
      .filter(o => o.textContent.includes('Traceback (most recent call last)')).length;

  // math: wait for MathJax's first typesetting pass, then every .math element must hold an mjx-container
  const math = [...main.querySelectorAll('.math')];
  r.math = math.length;
  if (math.length) {
    await until(() => window.MathJax && MathJax.startup && MathJax.startup.promise, 60000);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      await Promise.race([MathJax.startup.promise, sleep(60000)]);
    }
    r.math_typeset = math.filter(m => m.querySelector('mjx-container')).length;
    r.math_errors = main.querySelectorAll('mjx-merror').length;
  }

  // images: all must load; figures = loaded images in cell outputs or figure/image blocks
  const imgs = [...document.images];
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await until(() => imgs.every(i => i.complete), 60000);
  r.images = imgs.length;
  r.broken_images = imgs.filter(i => !(i.naturalWidth > 0)).map(i => (i.id || i.src).slice(0, 100));
  r.figures = imgs.filter(i => i.naturalWidth > 0 &&
      (i.closest('.cell_output, figure, .figure, .animation') || i.src.includes('/_images/'))).length;

  // saved ipywidgets: each view script gets a rendered widget from the HTML manager
  const views = [...main.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  r.widget_views = views.length;
  if (views.length) {
    const rendered = () => main.querySelectorAll('.widget-subarea > *, .jupyter-widgets').length;
    await until(() => rendered() >= views.length, 60000);
    r.widgets_rendered = Math.min(rendered(), views.length);
  }

  // static sliders (matplotlib JavaScript players): each opens on its last frame
  const sliders = [...main.querySelectorAll('.animation input.anim-slider')];
  r.sliders = sliders.length;
  await until(() => sliders.every(s => +s.max > 0), 10000);
  r.sliders_not_at_end = sliders.filter(s => +s.value !== +s.max).map(s => `${s.value} of ${s.max}`);

  // prose the reader sees as raw TeX: a dollar sign or a TeX command outside typeset math and code
  const skip = 'mjx-container, code, pre, script, style, .cell_output, .output, .highlight, kbd, samp, ' +
               '.animation, .jupyter-widgets, .widget-subarea, .MathJax, mjx-assistive-mml';
  const walker = document.createTreeWalker(main.querySelector('article') || main, NodeFilter.SHOW_TEXT);
  const tex = /\$|\\[A-Za-z]+|[_^]\{/;
  r.raw_tex = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement || n.parentElement.closest(skip)) continue;
    const m = n.textContent.match(tex);
    if (m) r.raw_tex.push(n.textContent.slice(Math.max(0, m.index - 40), m.index + 40).replace(/\s+/g, ' '));
  }

  // the column, and anything wider than it: a sideways scroll bar or a spill past its edge
  const themed = main.querySelector('article.bd-article');
  const article = themed || main.querySelector('article') || main;
  const ar = article.getBoundingClientRect(), acs = getComputedStyle(article);
  const left = ar.left + parseFloat(acs.paddingLeft), right = ar.right - parseFloat(acs.paddingRight);
  r.column = themed ? Math.round((right - left) * 10) / 10 : null;   // the book theme's column
  const ipynb = [...document.querySelectorAll('a[href$=".ipynb"]')].map(a => a.getAttribute('href'));
  r.ipynb_link = ipynb.length ? new URL(ipynb[0], location.href).pathname : null;
  r.themed = !!themed;
  const describe = e => {
    const cell = e.closest('div.cell');
    const where = cell ? `cell ${[...main.querySelectorAll('div.cell')].indexOf(cell) + 1}` :
                         (e.closest('section') || {}).id || '';
    return `${e.tagName.toLowerCase()}${e.className && typeof e.className === 'string' ?
            '.' + e.className.trim().split(/\s+/)[0] : ''} (${where})`;
  };
  r.too_wide = [];
  const seen = new Set();
  for (const e of main.querySelectorAll('pre, div.highlight, .cell_output, table, img, .animation, ' +
                                        'mjx-container[display="true"], .pst-scrollable-table-container')) {
    if (!e.offsetParent && e.tagName !== 'IMG') continue;   // not displayed
    const b = e.getBoundingClientRect();
    let why = null;
    if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
      why = `scrolls sideways (${e.scrollWidth} px of content in ${e.clientWidth} px)`;
    else if (b.right > right + 1 || b.left < left - 1)
      why = `spills past the column (${Math.round(b.left - left)} to ${Math.round(b.right - left)} px of ${Math.round(right - left)})`;
    if (why) {
      const key = describe(e) + why;
      if (!seen.has(key)) { seen.add(key); r.too_wide.push(`${describe(e)} ${why}`); }
    }
  }
  return r;
})()
"""

# Prepares slider number i for a mouse drag: first frame, scrolled into view; returns its geometry.
SLIDER_PREP_JS = r"""
(i => {
  const hash = s => { let h = 0; for (let k = 0; k < s.length; k += 7) h = (h * 31 + s.charCodeAt(k)) | 0;
                      return s.length + ':' + h; };
  const s = document.querySelectorAll('.animation input.anim-slider')[i];
  const img = document.getElementById(s.id.replace('_anim_slider', '_anim_img'));
  s.value = 0; s.dispatchEvent(new Event('input', {bubbles: true}));
  s.scrollIntoView({block: 'center'});
  const b = s.getBoundingClientRect();
  const first = s.closest('.animation').querySelector('button[title="First frame"]').getBoundingClientRect();
  window.__slider_hash = hash;
  return {x0: b.left + 3, x1: b.right - 2, y: b.top + b.height / 2, max: +s.max,
          value: +s.value, frame: hash(img.src),
          first: {x: first.left + first.width / 2, y: first.top + first.height / 2}};
})(%d)
"""

SLIDER_STATE_JS = r"""
(async i => {
  const s = document.querySelectorAll('.animation input.anim-slider')[i];
  const img = document.getElementById(s.id.replace('_anim_slider', '_anim_img'));
  try { await img.decode(); } catch (e) {}
  return {value: +s.value, frame: window.__slider_hash(img.src), width: img.naturalWidth};
})(%d)
"""


def evaluate(dt: DevTools, session: str, expr: str, timeout: float = 60):
    res = dt.send("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True},
                  session=session, timeout=timeout)
    if "exceptionDetails" in res:
        d = res["exceptionDetails"]
        raise RuntimeError(d.get("exception", {}).get("description") or d.get("text"))
    return res["result"].get("value")


def mouse(dt: DevTools, session: str, kind: str, x: float, y: float, buttons: int = 1):
    params = {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons}
    if kind in ("mousePressed", "mouseReleased"):
        params["clickCount"] = 1
    dt.send("Input.dispatchMouseEvent", params, session=session)


def exercise_slider(dt: DevTools, session: str, i: int) -> list[str]:
    """Drag slider ``i`` with the mouse from the first frame to the last, then click "First frame"."""
    g = evaluate(dt, session, SLIDER_PREP_JS % i)
    if g["max"] < 1:
        return [f"slider {i} has {g['max'] + 1} frame(s); a scrubber needs at least 2"]
    mouse(dt, session, "mouseMoved", g["x0"], g["y"], buttons=0)
    mouse(dt, session, "mousePressed", g["x0"], g["y"])
    for k in range(1, 11):
        mouse(dt, session, "mouseMoved", g["x0"] + (g["x1"] - g["x0"]) * k / 10, g["y"])
    mouse(dt, session, "mouseReleased", g["x1"], g["y"], buttons=0)
    end = evaluate(dt, session, SLIDER_STATE_JS % i)
    problems = []
    if end["value"] != g["max"]:
        problems.append(f"slider {i}: dragging to the end gave position {end['value']} of {g['max']}")
    if end["frame"] == g["frame"]:
        problems.append(f"slider {i}: the picture did not change when the slider moved")
    if not end["width"]:
        problems.append(f"slider {i}: the last frame is not a loadable image")
    mouse(dt, session, "mousePressed", g["first"]["x"], g["first"]["y"])
    mouse(dt, session, "mouseReleased", g["first"]["x"], g["first"]["y"], buttons=0)
    back = evaluate(dt, session, SLIDER_STATE_JS % i)
    if back["value"] != 0 or back["frame"] != g["frame"]:
        problems.append(f"slider {i}: the 'First frame' button did not bring back the first frame")
    return problems


# only the loopback server resolves: a page that needs a CDN fails here as it would offline
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def attach_page(dt: DevTools, domains=("Page", "Runtime")) -> str:
    """A new blank tab with the given DevTools domains enabled; returns its session id."""
    target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in domains:
        dt.send(f"{domain}.enable", session=session)
    return session


def set_viewport(dt: DevTools, session: str, height: int):
    dt.send("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT[0], "height": height,
            "deviceScaleFactor": 1, "mobile": False}, session=session)


def screenshot(dt: DevTools, session: str, path: Path):
    """The whole page (up to MAX_SHOT_HEIGHT): the viewport is made as tall as the page for the shot, which
    keeps the theme's sticky header and sidebar where a reader sees them."""
    evaluate(dt, session, "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    height = evaluate(dt, session, "document.documentElement.scrollHeight")
    set_viewport(dt, session, max(VIEWPORT[1], min(int(height), MAX_SHOT_HEIGHT)))
    try:
        evaluate(dt, session, "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = dt.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=120)
    finally:
        set_viewport(dt, session, VIEWPORT[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def page_problems(r: dict, is_notebook: bool) -> list[str]:
    p = []
    if not r["h1"] or not r["title"]:
        p.append("no title")
    if r["prose_chars"] < 200:
        p.append(f"almost no prose ({r['prose_chars']} characters)")
    if r["tracebacks"] or r["traceback_text"]:
        p.append(f"{max(r['tracebacks'], r['traceback_text'])} error output(s) from notebook execution")
    if r["math"] and (r.get("math_typeset", 0) < r["math"] or r.get("math_errors")):
        p.append(f"math not typeset: {r.get('math_typeset', 0)} of {r['math']} "
                 f"({r.get('math_errors', 0)} MathJax errors)")
    if r["broken_images"]:
        p.append(f"{len(r['broken_images'])} image(s) did not load: {r['broken_images'][:3]}")
    if is_notebook and r["figures"] == 0:
        p.append("a notebook page without any figure")
    if r["widget_views"] and r.get("widgets_rendered", 0) < r["widget_views"]:
        p.append(f"widgets not rendered: {r.get('widgets_rendered', 0)} of {r['widget_views']}")
    for text in r.get("raw_tex", [])[:5]:
        p.append(f"raw TeX or a stray $ in the text: ...{text}...")
    if len(r.get("raw_tex", [])) > 5:
        p.append(f"... and {len(r['raw_tex']) - 5} more places with raw TeX")
    for what in r.get("too_wide", [])[:8]:
        p.append(f"wider than the column at {VIEWPORT[0]} px: {what}")
    if len(r.get("too_wide", [])) > 8:
        p.append(f"... and {len(r['too_wide']) - 8} more elements wider than the column")
    if r.get("column") is not None and abs(r["column"] - BOOK_COLUMN_PX) > 1:
        p.append(f"the text column is {r['column']} px wide at {VIEWPORT[0]} px; the figures are sized for "
                 f"{BOOK_COLUMN_PX} px (reasoning_lab.plots.BOOK_COLUMN_PX)")
    for where in r.get("sliders_not_at_end", []):
        p.append(f"a player opens on frame {where}, not on its last frame")
    return p


# Known, harmless upstream messages. sphinx-thebe 0.3.1 (pulled in by Jupyter Book 1.x) adds its inline
# configuration script twice to every page, so the second copy throws; the book has no thebe launch button,
# so nothing reads that configuration.
BENIGN = ("Identifier 'THEBE_JS_URL' has already been declared",)


def event_problems(events: list[dict], session: str, origin: str) -> list[str]:
    p = []
    urls = {ev["params"]["requestId"]: ev["params"]["request"]["url"] for ev in events
            if ev.get("method") == "Network.requestWillBeSent"}
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        m, prm = ev.get("method"), ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = prm["exceptionDetails"]
            text = (d.get("exception", {}).get("description") or d.get("text", "")).splitlines()[0]
            if not any(b in text for b in BENIGN):
                p.append("JavaScript exception: " + text[:200])
        elif m == "Runtime.consoleAPICalled" and prm.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in prm.get("args", []))
            p.append("console error: " + text[:200])
        elif m == "Network.requestWillBeSent":
            url = prm["request"]["url"]
            if urlparse(url).scheme in ("http", "https", "ws", "wss") and not url.startswith(origin):
                p.append("request outside the book: " + url[:200])
        elif (m == "Network.responseReceived" and prm["response"].get("status", 200) >= 400
              and urlparse(prm["response"]["url"]).path != "/favicon.ico"):  # asked for by the browser itself
            p.append(f"HTTP {prm['response']['status']} for {prm['response']['url'][:200]}")
        elif m == "Network.loadingFailed" and not prm.get("canceled"):
            p.append(f"failed to load ({prm.get('errorText')}): {urls.get(prm.get('requestId'), '?')[:200]}")
    return list(dict.fromkeys(p))


# ------------------------------------------------------------------------------------------------ main

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def find_browser() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def summary(r: dict) -> str:
    bits = [f"math {r.get('math_typeset', 0)}/{r['math']}", f"figures {r['figures']}"]
    if r["sliders"]:
        bits.append(f"sliders {r['sliders']} (dragged)")
    if r["widget_views"]:
        bits.append(f"widgets {r.get('widgets_rendered', 0)}/{r['widget_views']}")
    return ", ".join(bits)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check the built HTML book in headless Chromium.")
    ap.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    ap.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    ap.add_argument("--screenshots", type=Path, default=None, help="default: <html>/../screenshots")
    ap.add_argument("--page", action="append", default=[], help="only these documents (e.g. book/intro)")
    args = ap.parse_args(argv)
    html_dir = args.html.resolve()
    shots = (args.screenshots or html_dir.parent / "screenshots").resolve()

    binary = find_browser()
    if binary is None:
        print("browser test SKIPPED: no Chromium found (install the `chromium` package, or set CHROMIUM=/path)")
        return 0
    if not (html_dir / "index.html").is_file():
        print(f"browser test: no built book at {html_dir}; run `make book` first", file=sys.stderr)
        return 2

    failures: dict[str, list[str]] = {}
    reports = execution_reports(html_dir)
    if reports:
        failures["(execution reports)"] = [str(p.relative_to(html_dir)) for p in reports]
    pages = args.page or toc_pages(args.toc)
    missing = [p for p in pages if not (html_dir / f"{p}.html").is_file()]
    if missing:
        failures["(missing pages)"] = missing
    pages = [p for p in pages if p not in missing]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(html_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"browser test: {len(pages)} pages of {html_dir} in {Path(binary).name}, served at {origin}")
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="browser-check-") as profile:
        dt = DevTools(binary, profile, extra_args=[OFFLINE])
        try:
            session = attach_page(dt, ("Page", "Runtime", "Network"))
            set_viewport(dt, session, VIEWPORT[1])
            for name in pages:
                t0 = time.monotonic()
                seen = dt.events()
                problems = []
                dt.send("Page.navigate", {"url": origin + name + ".html"}, session=session)
                if not dt.wait_event("Page.loadEventFired", session, 60, seen):
                    problems.append("page did not finish loading in 60 s")
                r = {"math": 0, "figures": 0, "sliders": 0, "widget_views": 0}
                try:
                    r = evaluate(dt, session, PAGE_CHECK_JS, timeout=300)
                    problems += page_problems(r, is_notebook=r["code_cells"] > 0)
                    if r["code_cells"] > 0 and (r.get("themed") or r.get("ipynb_link")):
                        problems += download_problems(html_dir, r.get("ipynb_link"))
                    for i in range(r["sliders"]):
                        problems += exercise_slider(dt, session, i)
                    screenshot(dt, session, shots / (name.replace("/", "__") + ".png"))
                except RuntimeError as e:  # a page that breaks the check itself fails; the others still run
                    problems.append(f"check could not run: {str(e).splitlines()[0][:200]}")
                time.sleep(0.2)  # let late console messages arrive
                problems += event_problems(seen + dt.events(), session, origin)
                status = "FAIL" if problems else "ok  "
                print(f"  {status} {name:<32} {summary(r)}  [{time.monotonic() - t0:.1f} s]")
                for msg in problems:
                    print(f"         - {msg}")
                if problems:
                    failures[name] = problems
        finally:
            dt.close()
            server.shutdown()
    took = time.monotonic() - t_start
    for key in ("(execution reports)", "(missing pages)"):
        if key in failures:
            print(f"  FAIL {key}: {', '.join(failures[key])}")
    if failures:
        print(f"browser test FAILED: {len(failures)} problem page(s) of {len(pages)}; "
              f"screenshots in {shots} ({took:.0f} s)")
        return 1
    print(f"browser test passed: {len(pages)} pages; screenshots in {shots} ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
