"""sweep.html in a real headless Chromium (Debian's `chromium`, installed by `make test`), driven over the DevTools
protocol: the plot renders one circle per ok point, and hovering a point shows its design and re-run line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from lowbit.explore.execute import run
from lowbit.explore.spec import load_spec
from lowbit.explore.store import ResultCache

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    """One headless Chromium and a DevTools websocket to its first page."""

    def __init__(self, profile: Path):
        import websocket

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=1200,900", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        t = time.monotonic()
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() - t > 60 or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(x for x in targets if x["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def open(self, path: Path) -> None:
        self.call("Page.navigate", url=path.resolve().as_uri())
        t = time.monotonic()
        while self.js("document.readyState") != "complete" or not self.js("document.querySelectorAll('circle').length"):
            assert time.monotonic() - t < 30, "page did not render"
            time.sleep(0.05)

    def hover(self, selector: str) -> tuple[str, str]:
        """Move the mouse onto the element's centre (a real input event); (the hover box's text, data-point of
        the element on top there, which is the one hovered when points overlap)."""
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
        assert self.js("getComputedStyle(document.getElementById('tip')).display") == "block"
        top = self.js(f"document.elementFromPoint({box[0]}, {box[1]}).getAttribute('data-point')")
        return self.js("document.getElementById('tip').textContent"), top

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium (make chromium)")
        pytest.skip(f"{CHROMIUM} missing: run `make chromium` (apt-get install chromium)")
    pytest.importorskip("websocket")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


SPEC = """
[sweep]
base = "tiny"
objectives = ["decode_tok_s", "prefill_latency_s"]
[workload]
model = "bitnet-tiny"
prefill = 8
decode = 4
[params]
"tint.cores" = [1, 2]
"lop.k" = [4, 8]
"sram.act.bytes" = [16, 2048]
"""


def test_sweep_page_renders_and_hover_shows_the_design(browser, tmp_path):
    from lowbit.explore.cli import _finish

    (tmp_path / "spec.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.toml")
    records, stats = run(spec, serial=True, cache=ResultCache(tmp_path / "cache"))
    _finish(spec, records, stats, tmp_path / "out", False, None)
    html = (tmp_path / "out" / "sweep.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # no network
    browser.open(tmp_path / "out" / "sweep.html")
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 4  # act buffer of 16 B: infeasible, not plotted
    assert browser.js("document.querySelectorAll('#plot circle.pt').length") == 4
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    assert browser.js("document.querySelectorAll('#plot circle.front').length") == sum(r["pareto"] for r in rows) >= 1
    target = next(r for r in ok if r["values"] == {"tint.cores": 2, "lop.k": 4, "sram.act.bytes": 2048})
    text, top = browser.hover(f"circle[data-point='{target['point']}']")
    assert top == str(target["point"]) and text.startswith(f"point {target['point']}  (bitnet-tiny 8+4)")
    assert "tint.cores = 2" in text and "lop.k = 4" in text and "sram.act.bytes = 2048" in text
    assert f"decode tokens/s: {target['decode_tok_s']:.0f}\n" in text  # > 1e4: the page prints it as an integer
    assert "re-run: lowbit sim --model bitnet-tiny --hw tiny --prefill 8 --decode 4 --set tint.cores=2 --set lop.k=4 " \
           "--set sram.act.bytes=2048" in text
    assert browser.js("document.querySelector('#plot .axes text') !== null")


def test_committed_example_page(browser):
    page = ROOT / "reports" / "sweep-vitallm" / "sweep.html"
    if not page.exists():
        pytest.skip("no committed example sweep")
    browser.open(page)
    n = browser.js("document.querySelectorAll('#plot circle.pt').length")
    assert n >= 100
    text, top = browser.hover("#plot circle.front")
    assert text.startswith(f"point {top}  (bitnet-b1.58-3b 64+128)")
    assert "tint.cores = " in text and "re-run: lowbit sim --model bitnet-b1.58-3b --hw vitallm" in text
