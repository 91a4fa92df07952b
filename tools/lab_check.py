"""The interactive path, end to end: JupyterLab with a live kernel in headless Chromium.

Starts ``jupyter lab`` on 127.0.0.1 (a random free port, a random token, no browser of its own, settings
and workspaces in a temporary folder), opens a MyST chapter as a notebook through jupytext, runs every
cell, then drags an ipywidgets slider with the mouse and waits for the kernel to redraw the figure (the
image must change). The redrawn figure is saved as a screenshot. Finally the server is shut down through
its API and the check makes sure that nothing it started (server, kernel) is still running.

Chromium is driven as in ``tools/browser_check.py`` (DevTools protocol over a pipe, every host but the
loopback unresolvable). Without a Chromium binary it prints one line saying the check was skipped and
exits 0.

    python tools/lab_check.py [--notebook notebooks/one-layer-dynamics.md] [--screenshot PATH]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
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


def drive(dt: DevTools, session: str, url: str, notebook: str, shot: Path, run_timeout: float) -> list[str]:
    """Open, run, drag, screenshot; returns the problems found (empty: passed)."""
    dt.send("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT[0], "height": VIEWPORT[1],
            "deviceScaleFactor": 1, "mobile": False}, session=session)
    dt.send("Page.navigate", {"url": url}, session=session)
    if not wait_for(lambda: evaluate(dt, session, "!!(window.jupyterapp && document.querySelector('.jp-LabShell'))"),
                    120):
        return ["JupyterLab did not start in the browser within 120 s (is --expose-app-in-browser honoured?)"]
    opened = evaluate(dt, session, OPEN_JS % json.dumps(notebook), timeout=120)
    print(f"  opened {notebook} with the '{opened['factory']}' factory: {opened['cells']} cells, "
          f"kernel {opened['kernel']}")
    if opened["factory"] != "Jupytext Notebook" or opened["cells"] < 3:
        return [f"{notebook} opened with '{opened['factory']}' and {opened['cells']} cell(s): "
                "jupytext did not open it as a notebook"]
    t0 = time.monotonic()
    # started, not awaited: the command's promise settles only when the last cell has run
    evaluate(dt, session, "void window.jupyterapp.commands.execute('notebook:run-all-cells'); true")
    state = {}

    def finished():
        nonlocal state
        state = evaluate(dt, session, STATE_JS)
        return state["errors"] or (state["executed"] == state["code"] and state["status"] == "idle"
                                   and not state["pending"] and state["sliders"])

    wait_for(finished, run_timeout, every=1.0)
    if state.get("errors"):
        return [f"the notebook raised: {e}" for e in state["errors"]]
    if not (state["executed"] == state["code"] and state["status"] == "idle"):
        return [f"after {run_timeout:.0f} s {state['executed']} of {state['code']} code cells ran "
                f"(kernel {state['status']})"]
    if not state["sliders"]:
        return ["the notebook ran but shows no ipywidgets slider (widget manager missing?)"]
    print(f"  ran all {state['code']} code cells in {time.monotonic() - t0:.0f} s; "
          f"{state['sliders']} widget slider(s)")

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="JupyterLab with a live kernel in headless Chromium.")
    ap.add_argument("--notebook", default="notebooks/one-layer-dynamics.md",
                    help="chapter to open, relative to the repository root (it needs an ipywidgets slider)")
    ap.add_argument("--screenshot", type=Path, default=ROOT / "_build" / "lab" / "one-layer-dynamics.png")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed for running the notebook")
    args = ap.parse_args(argv)

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
        inherited = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        env = {**inherited, marker.split("=")[0]: marker.split("=")[1],
               "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
               "REASONING_LAB_QUIET": "1"}
        jupyter = Path(sys.executable).with_name("jupyter")
        cmd = [str(jupyter), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={ROOT}", "--expose-app-in-browser",
               f"--LabApp.app_settings_dir={ROOT / 'tools' / 'lab-settings'}",   # as `make lab`
               f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'ws'}"]
        if os.geteuid() == 0:  # containers and CI machines often run as root
            cmd.append("--allow-root")
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
            wait_for(up, 120)
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"jupyter lab exited {server.returncode}: {log.read()[-2000:]}")
            print(f"lab test: jupyter lab at {base} (pid {server.pid}), {Path(binary).name} headless")
            with tempfile.TemporaryDirectory(prefix="lab-browser-") as profile:
                dt = DevTools(binary, profile, extra_args=[OFFLINE])
                try:
                    session = attach_page(dt)
                    url = f"{base}/lab?reset&token={token}"
                    problems += drive(dt, session, url, args.notebook, args.screenshot.resolve(), args.timeout)
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
    print(f"lab test passed: live kernel, slider redraws the figure, server stopped ({took:.0f} s)")
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
