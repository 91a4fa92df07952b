"""The interactive path, end to end: ``make lab`` with a live kernel, in headless Chromium.

Starts JupyterLab the way a reader does, through ``make lab`` (the kernels get its environment: no
REASONING_LAB_QUIET, no REASONING_LAB_THREADS), on 127.0.0.1 (a random free port, a random token, no
browser of its own, settings and workspaces in a temporary folder). Then it

- opens a MyST chapter as a notebook through jupytext and runs every cell;
- checks the prose as the reader sees it: jupyterlab-myst rendered every markdown cell, no MyST role is
  left as literal text (``{glue:text}``, ``{doc}``, ...) and every ``{eval}`` expression shows a value,
  not an error; the rendered text of the whole chapter (prose and outputs) is written to
  ``_build/lab/<chapter>.txt``;
- checks that the kernel is interactive: progress bars on (``reasoning_lab.io.quiet()`` is False, a
  progress bar is a notebook widget) and no thread override;
- drags an ipywidgets slider with the mouse (when the chapter has one) and waits for the kernel to redraw
  the figure (the image must change), saved as a screenshot;
- saves the notebook as Ctrl-S does and checks that the chapter's ``.md`` is byte for byte unchanged;

then shuts the server down through its API and makes sure that nothing it started is still running.

Chromium is driven as in ``tools/browser_check.py`` (DevTools protocol over a pipe, every host but the
loopback unresolvable). Without a Chromium binary it prints one line saying the check was skipped and
exits 0.

    python tools/lab_check.py [--notebook notebooks/bilinear-dynamics.md] [--screenshot PATH]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_check import OFFLINE, DevTools, attach_page, evaluate, find_browser, mouse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT = (1400, 1000)

# JavaScript helpers, evaluated in the JupyterLab page (``window.jupyterapp``: --expose-app-in-browser).
OPEN_JS = r"""
(async path => {
  const app = window.jupyterapp;
  await app.started; await app.restored;
  // what a double click in the file browser opens: the default viewer for this file
  const factory = app.docRegistry.defaultWidgetFactory(path).name;
  const w = await app.commands.execute('docmanager:open', {path});
  await w.context.ready; await w.sessionContext.ready;
  return {factory, cells: w.content ? w.content.widgets.length : 0,
          kernel: w.sessionContext.session && w.sessionContext.session.kernel.name};
})(%s)
"""

STATE_JS = r"""
(() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  for (const c of cells) for (let i = 0; i < c.model.outputs.length; i++) {
    const o = c.model.outputs.get(i);
    if (o.type === 'error') errors.push(String(o.toJSON().ename) + ': ' + String(o.toJSON().evalue));
  }
  return {status: w.sessionContext.session ? w.sessionContext.session.kernel.status : 'none',
          code: cells.length, executed: cells.filter(c => c.model.executionCount !== null).length,
          pending: cells.filter(c => c.node.querySelector('.jp-InputArea-prompt') &&
                                     c.node.querySelector('.jp-InputArea-prompt').textContent.includes('*'))
                         .length,
          errors, sliders: document.querySelectorAll('.jp-OutputArea .widget-slider .noUi-handle').length};
})()
"""

# The first widget slider of the notebook: scrolled into view; its handle and track, and the hash of the
# figure drawn below it by the interact's output widget.
SLIDER_JS = r"""
(() => {
  const hash = s => { let h = 0; for (let k = 0; k < s.length; k += 7) h = (h * 31 + s.charCodeAt(k)) | 0;
                      return s.length + ':' + h; };
  window.__lab_hash = hash;
  const handle = document.querySelector('.jp-OutputArea .widget-slider .noUi-handle');
  const box = handle.closest('.widget-interact') || handle.closest('.jp-OutputArea');
  window.__lab_box = box;
  box.scrollIntoView({block: 'start'});
  const slider = handle.closest('.widget-slider');
  const label = slider.querySelector('.widget-label');
  const track = slider.querySelector('.noUi-target').getBoundingClientRect();
  const h = handle.getBoundingClientRect();
  const img = box.querySelector('img');
  const drawn = img && img.complete && img.naturalWidth;
  return {x: h.left + h.width / 2, y: h.top + h.height / 2, right: track.right - 2,
          label: label ? label.textContent : '', value: slider.querySelector('.widget-readout').textContent,
          figure: drawn ? hash(img.src) : null};
})()
"""

FIGURE_JS = r"""
(() => {
  const box = window.__lab_box;
  const img = box.querySelector('img');
  const slider = box.querySelector('.widget-slider');
  const r = box.getBoundingClientRect();
  return {figure: img && img.complete && img.naturalWidth ? window.__lab_hash(img.src) : null,
          value: slider.querySelector('.widget-readout').textContent,
          clip: {x: r.left, y: Math.max(r.top, 0), width: r.width, height: Math.min(r.height, 2000)}};
})()
"""


# The chapter as the reader sees it: each cell's rendered prose or its outputs, in order.
TEXT_JS = r"""
(() => {
  const w = window.jupyterapp.shell.currentWidget;
  return w.content.widgets.map(c => {
    if (c.model.type === 'markdown') {
      const r = c.node.querySelector('.myst, .jp-RenderedMarkdown');
      return {type: 'markdown', rendered: !!r, myst: !!c.node.querySelector('.myst'),
              text: r ? r.innerText : c.model.sharedModel.getSource()};
    }
    const out = c.node.querySelector('.jp-OutputArea');
    return {type: c.model.type, rendered: true, myst: false, text: out ? out.innerText : ''};
  });
})()
"""

# What the kernel the reader runs does: progress bars, threads.
KERNEL_JS = r"""
(async () => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const expr = {
    quiet: "__import__('reasoning_lab.io', fromlist=['quiet']).quiet()",
    bar: "isinstance(__import__('reasoning_lab.io', fromlist=['progress']).progress(range(1), enabled=True), " +
         "__import__('tqdm.notebook', fromlist=['tqdm']).tqdm)",
    env: "{k: v for k, v in __import__('os').environ.items() if k.startswith('REASONING_LAB_')}",
  };
  const reply = await kernel.requestExecute({code: '', silent: true, store_history: false,
                                             user_expressions: expr}).done;
  const out = {};
  for (const [k, v] of Object.entries(reply.content.user_expressions))
    out[k] = v.status === 'ok' ? v.data['text/plain'] : 'error: ' + v.ename + ': ' + v.evalue;
  return out;
})()
"""

SAVE_JS = r"""
(async () => {
  await window.jupyterapp.commands.execute('docmanager:save');
  const w = window.jupyterapp.shell.currentWidget;
  return {dirty: w.context.model.dirty};
})()
"""

# A MyST role written out as text: what the renderer shows for a role it does not know.
RAW_ROLE = re.compile(r"\{[a-z][\w:+-]*\}`")
# What jupyterlab-myst shows for an {eval} expression that failed in the kernel.
EXPRESSION_ERROR = re.compile(r"\b[A-Z]\w*(?:Error|Exception): ")


def prose_problems(cells: list[dict], source: str) -> list[str]:
    """What is wrong with the rendered prose (empty: every markdown cell rendered by jupyterlab-myst, no
    role left as text, every {eval} expression evaluated)."""
    problems = []
    markdown = [c for c in cells if c["type"] == "markdown"]
    if not markdown:
        return ["the chapter has no markdown cell"]
    unrendered = [c for c in markdown if not c["rendered"]]
    if unrendered:
        problems.append(f"{len(unrendered)} markdown cell(s) not rendered: {unrendered[0]['text'][:80]!r}")
    if not all(c["myst"] for c in markdown if c["rendered"]):
        problems.append("markdown cells are not rendered by jupyterlab-myst (is it installed?)")
    for c in markdown:
        for m in RAW_ROLE.finditer(c["text"]):
            problems.append(f"role left as text: {c['text'][max(m.start() - 30, 0):m.end() + 30]!r}")
        for m in EXPRESSION_ERROR.finditer(c["text"]):
            problems.append(f"inline expression failed: {c['text'][m.start():m.start() + 120]!r}")
    if "{eval}" in source and not problems and not any(re.search(r"\d", c["text"]) for c in markdown):
        problems.append("the prose shows no number at all")
    return problems


def kernel_problems(k: dict) -> list[str]:
    problems = []
    if k.get("quiet") != "False":
        problems.append(f"the kernel is quiet (reasoning_lab.io.quiet() = {k.get('quiet')}): no progress bars")
    if k.get("bar") != "True":
        problems.append(f"a progress bar in the kernel is not tqdm's notebook widget ({k.get('bar')})")
    if "REASONING_LAB_THREADS" in str(k.get("env")) or "REASONING_LAB_QUIET" in str(k.get("env")):
        problems.append(f"the kernel inherited {k.get('env')} from the build environment")
    return problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, token: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"},
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        return json.loads(body) if body else None


def processes_with(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (everything the server started inherits it)."""
    found = []
    needle = marker.encode()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "environ").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def wait_for(cond, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def run_all(dt: DevTools, session: str, notebook: str, run_timeout: float) -> tuple[dict, list[str]]:
    """Open the chapter as a reader does (double click: the default viewer) and run every cell."""
    opened = evaluate(dt, session, OPEN_JS % json.dumps(notebook), timeout=120)
    print(f"  opened {notebook} with the '{opened['factory']}' factory: {opened['cells']} cells, "
          f"kernel {opened['kernel']}")
    if opened["factory"] != "Jupytext Notebook" or opened["cells"] < 3:
        return {}, [f"{notebook} opened with '{opened['factory']}' and {opened['cells']} cell(s): "
                    "jupytext did not open it as a notebook"]
    t0 = time.monotonic()
    # started, not awaited: the command's promise settles only when the last cell has run
    evaluate(dt, session, "void window.jupyterapp.commands.execute('notebook:run-all-cells'); true")
    state = {}

    def finished():
        nonlocal state
        state = evaluate(dt, session, STATE_JS)
        return state["errors"] or (state["executed"] == state["code"] and state["status"] == "idle"
                                   and not state["pending"])

    wait_for(finished, run_timeout, every=1.0)
    if state.get("errors"):
        return state, [f"the notebook raised: {e}" for e in state["errors"]]
    if not (state["executed"] == state["code"] and state["status"] == "idle"):
        return state, [f"after {run_timeout:.0f} s {state['executed']} of {state['code']} code cells ran "
                       f"(kernel {state['status']})"]
    print(f"  ran all {state['code']} code cells in {time.monotonic() - t0:.0f} s; "
          f"{state['sliders']} widget slider(s)")
    return state, []


def check_prose(dt: DevTools, session: str, notebook: str, text_out: Path) -> list[str]:
    """The rendered chapter: written to ``text_out``; its prose must have rendered whole."""
    time.sleep(2.0)   # the renderer fills in the inline expressions once the kernel has answered
    cells = evaluate(dt, session, TEXT_JS)
    text_out.parent.mkdir(parents=True, exist_ok=True)
    text_out.write_text("\n\n".join(c["text"].strip() for c in cells if c["text"].strip()) + "\n")
    source = (ROOT / notebook).read_text()
    problems = prose_problems(cells, source)
    n_eval = source.count("{eval}`")
    if not problems:
        print(f"  prose rendered by jupyterlab-myst: {sum(c['type'] == 'markdown' for c in cells)} markdown "
              f"cells, {n_eval} inline expression(s) evaluated, no role left as text; text in {text_out}")
    return problems


def check_kernel(dt: DevTools, session: str) -> list[str]:
    k = evaluate(dt, session, KERNEL_JS, timeout=60)
    problems = kernel_problems(k)
    if not problems:
        print(f"  the kernel shows progress bars (a notebook widget) and no thread override: {k['env']}")
    return problems


def check_save(dt: DevTools, session: str, notebook: str, before: bytes) -> list[str]:
    res = evaluate(dt, session, SAVE_JS, timeout=60)
    after = (ROOT / notebook).read_bytes()
    if res.get("dirty"):
        return ["saving the notebook left it unsaved"]
    if after != before:
        import difflib

        diff = [d for d in difflib.unified_diff(before.decode().splitlines(), after.decode().splitlines(),
                                                lineterm="", n=0) if d[:1] in "+-" and d[:3] not in ("+++", "---")]
        (ROOT / notebook).write_bytes(before)   # the checkout is left as it was
        return [f"saving in JupyterLab changed {notebook}: {diff[:4]}"]
    print(f"  saved as Ctrl-S does: {notebook} unchanged")
    return []


def drag_slider(dt: DevTools, session: str, shot: Path) -> list[str]:
    """Drag the first widget slider and wait for the kernel to redraw its figure; screenshot."""
    time.sleep(1.0)  # let the interact draw its first figure
    before = evaluate(dt, session, SLIDER_JS)
    if before["figure"] is None:  # a busy machine: the browser may still be decoding the first figure
        wait_for(lambda: evaluate(dt, session, SLIDER_JS)["figure"], 180, every=1.0)
        before = evaluate(dt, session, SLIDER_JS)
    if before["figure"] is None:
        return ["the interactive cell drew no figure before the slider moved"]
    # drag the handle most of the way to the end of its track
    x, y, x1 = before["x"], before["y"], before["x"] + 0.8 * (before["right"] - before["x"])
    mouse(dt, session, "mouseMoved", x, y, buttons=0)
    mouse(dt, session, "mousePressed", x, y)
    for k in range(1, 9):
        mouse(dt, session, "mouseMoved", x + (x1 - x) * k / 8, y)
        time.sleep(0.05)
    mouse(dt, session, "mouseReleased", x1, y, buttons=0)
    after = {}

    def redrawn():
        nonlocal after
        after = evaluate(dt, session, FIGURE_JS)
        idle = evaluate(dt, session, STATE_JS)["status"] == "idle"
        return idle and after["figure"] is not None and after["figure"] != before["figure"]

    ok = wait_for(redrawn, 240, every=0.5)
    problems = []
    if after.get("value") == before["value"]:
        problems.append(f"dragging the slider '{before['label']}' left its value at {before['value']}")
    if not ok:
        problems.append(f"the figure was not redrawn by the kernel after '{before['label']}' moved "
                        f"from {before['value']} to {after.get('value')}")
    else:
        print(f"  dragged '{before['label']}' from {before['value']} to {after['value']}: "
              "the kernel redrew the figure")
    time.sleep(0.5)
    clip = evaluate(dt, session, FIGURE_JS)["clip"]
    png = dt.send("Page.captureScreenshot", {"format": "png", "clip": {**clip, "scale": 1}}, session=session)
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.write_bytes(base64.b64decode(png["data"]))
    print(f"  screenshot of the redrawn figure: {shot}")
    return problems


def drive(dt: DevTools, session: str, url: str, notebook: str, shot: Path, text_out: Path,
          run_timeout: float, need_slider: bool) -> list[str]:
    """Open, run, read the prose, check the kernel, drag, save; returns the problems found (empty: passed)."""
    dt.send("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT[0], "height": VIEWPORT[1],
            "deviceScaleFactor": 1, "mobile": False}, session=session)
    dt.send("Page.navigate", {"url": url}, session=session)
    if not wait_for(lambda: evaluate(dt, session, "!!(window.jupyterapp && document.querySelector('.jp-LabShell'))"),
                    120):
        return ["JupyterLab did not start in the browser within 120 s (is --expose-app-in-browser honoured?)"]
    before = (ROOT / notebook).read_bytes()
    state, problems = run_all(dt, session, notebook, run_timeout)
    if problems:
        return problems
    problems += check_prose(dt, session, notebook, text_out)
    problems += check_kernel(dt, session)
    if need_slider:   # the widget manager may still be drawing the interact's controls
        wait_for(lambda: evaluate(dt, session, STATE_JS)["sliders"], 60, every=1.0)
        state = evaluate(dt, session, STATE_JS)
    if state["sliders"]:
        problems += drag_slider(dt, session, shot)
    elif need_slider:
        problems.append("the notebook ran but shows no ipywidgets slider (widget manager missing?)")
    problems += check_save(dt, session, notebook, before)
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="`make lab` with a live kernel in headless Chromium.")
    ap.add_argument("--notebook", default="notebooks/bilinear-dynamics.md",
                    help="chapter to open, relative to the repository root")
    ap.add_argument("--screenshot", type=Path, default=None,
                    help="the redrawn figure (default: _build/lab/<chapter>.png)")
    ap.add_argument("--text", type=Path, default=None,
                    help="the chapter's rendered text (default: _build/lab/<chapter>.txt)")
    ap.add_argument("--no-slider", action="store_true", help="the chapter need not have a widget slider")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed for running the notebook")
    args = ap.parse_args(argv)
    stem = Path(args.notebook).stem
    shot = (args.screenshot or ROOT / "_build" / "lab" / f"{stem}.png").resolve()
    text_out = (args.text or ROOT / "_build" / "lab" / f"{stem}.txt").resolve()

    binary = find_browser()
    if binary is None:
        print("lab test SKIPPED: no Chromium found (install the `chromium` package, or set CHROMIUM=/path)")
        return 0
    port, token = free_port(), secrets.token_hex(16)
    marker = f"REASONING_LAB_LAB_CHECK={secrets.token_hex(8)}"
    base = f"http://127.0.0.1:{port}"
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lab-check-") as tmp:
        tmp = Path(tmp)
        # the kernel must use its inline backend: an inherited MPLBACKEND (the unit tests set Agg) would
        # make every plt.show() in the notebook draw nothing
        inherited = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "MAKEFLAGS", "MFLAGS")}
        env = {**inherited, marker.split("=")[0]: marker.split("=")[1],
               "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
        lab_args = ["--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                    "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--expose-app-in-browser",
                    f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'ws'}"]
        # the reader's command, with the Makefile's environment and settings (VENV: this interpreter's)
        venv = Path(sys.executable).parent.parent
        cmd = ["make", "--no-print-directory", "-C", str(ROOT), "lab", f"VENV={venv}",
               f"LAB_ARGS={shlex.join(lab_args)}"]
        log = open(tmp / "server.log", "w+")
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        t0 = time.monotonic()
        try:
            def up():
                try:
                    return api(base, token, "/api/status") is not None
                except OSError:
                    return server.poll() is not None
            wait_for(up, 300)
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"make lab exited {server.returncode}: {log.read()[-2000:]}")
            print(f"lab test: `make lab` at {base} (pid {server.pid}), {Path(binary).name} headless")
            with tempfile.TemporaryDirectory(prefix="lab-browser-") as profile:
                dt = DevTools(binary, profile, extra_args=[OFFLINE])
                try:
                    session = attach_page(dt)
                    url = f"{base}/lab?reset&token={token}"
                    problems += drive(dt, session, url, args.notebook, shot, text_out, args.timeout,
                                      need_slider=not args.no_slider)
                finally:
                    dt.close()
        except RuntimeError as e:
            problems.append(str(e).splitlines()[0][:300])
        finally:
            stop(server, base, token, marker, problems)
            log.close()
    took = time.monotonic() - t0
    if problems:
        for p in problems:
            print(f"  FAIL {p}")
        print(f"lab test FAILED ({took:.0f} s)")
        return 1
    print(f"lab test passed: prose rendered, interactive kernel, slider redraws the figure, saving keeps "
          f"the source, server stopped ({took:.0f} s)")
    return 0


def stop(server: subprocess.Popen, base: str, token: str, marker: str, problems: list[str]) -> None:
    """Shut the server down through its API (which stops its kernels), then make sure nothing is left."""
    try:
        api(base, token, "/api/shutdown", method="POST")
    except OSError:
        pass
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        problems.append("jupyter lab did not exit within 30 s of /api/shutdown")
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    left = wait_for(lambda: not processes_with(marker), 15) or processes_with(marker)
    if left is not True and left:
        problems.append(f"processes still running after shutdown: {left}")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
