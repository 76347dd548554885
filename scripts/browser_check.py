"""Check in headless Chromium that a plate run renders in the Prefect UI; save screenshots.

Starts a Prefect server in a temporary home, runs a small synthetic plate through the
`process-plate` flow, then drives one headless Chromium over the DevTools protocol: opens the
flow-run page, clicks its Task Runs and Artifacts tabs (the UI keeps tabs in client state, so a
URL alone cannot open them), opens each artifact page, reads the rendered DOM and takes a
screenshot of each. Exits 1 and lists what is missing if a task run, an artifact or a thumbnail
does not render.

Not run in CI (needs Debian's `chromium`; about a minute):

    /work/venv/bin/python scripts/browser_check.py --out /tmp/hcs-screens
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1400,900",
]
WELLS = ["A01", "A02", "A03", "A04", "B01", "B02", "B03", "B04"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the screenshots (default: temp)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--keep", action="store_true", help="leave the server up until Enter")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hcs-browser-"))
    out = (args.out or work / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Settle Prefect's environment before anything imports it.
    os.environ.update(
        PREFECT_HOME=str(work / "client-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",  # INFO still goes to the API
    )
    os.environ.pop("PREFECT_API_URL", None)
    from prefect_hcs.runtime.server import start_server

    server = start_server(work / "server-home")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        run_id, plate_id = _run_plate(work)
        print(f"flow run: {server.ui_url}/runs/flow-run/{run_id}")
        problems = _check(server.api_url, server.ui_url, run_id, plate_id, out, args.chromium, work)
        if args.keep:
            input(f"UI at {server.ui_url} - press Enter to stop the server ")
    finally:
        server.stop()
    print(f"screenshots in {out}:")
    for shot in sorted(out.glob("*.png")):
        print(f"  {shot.name}  ({shot.stat().st_size:,} bytes)")
    if problems:
        print("MISSING:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    print("OK: task runs and artifacts render in the UI")
    return 0


def _run_plate(work: Path) -> tuple[str, str]:
    from prefect_hcs.runtime.flow import process_plate
    from prefect_hcs.testing.synthetic import make_plate

    plate = work / "ScreenPlate"
    make_plate(
        str(plate), format="imagexpress", wells=WELLS, sites=4, channels=2, z=2, size=128, seed=5
    )
    state = process_plate(plate=str(plate), return_state=True)
    if not state.is_completed():
        raise SystemExit(f"the plate run did not complete: {state.message}")
    return str(state.state_details.flow_run_id), plate.name


def _api(api_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{api_url}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _wait_for_records(api_url: str, run_id: str, timeout: float = 60) -> tuple[list, list]:
    """Task runs and artifacts as the API has them once every task run is final."""
    deadline = time.monotonic() + timeout
    while True:
        runs = _api(
            api_url,
            "/task_runs/filter",
            {"flow_runs": {"id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC",
             "limit": 200},
        )  # fmt: skip
        arts = _api(
            api_url,
            "/artifacts/filter",
            {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "sort": "CREATED_DESC",
             "limit": 200},
        )  # fmt: skip
        final = runs and all(r["state_type"] == "COMPLETED" for r in runs)
        if (final and len(arts) >= 8) or time.monotonic() > deadline:
            return runs, arts
        time.sleep(1)


class Browser:
    """One headless Chromium page driven over the DevTools protocol (websockets ships with Prefect)."""

    def __init__(self, exe: str, profile: Path) -> None:
        from prefect_hcs.runtime.server import free_port

        port = free_port()
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--remote-debugging-port={port}", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                pages = _api(f"http://127.0.0.1:{port}", "/json/list")
                target = next(p for p in pages if p.get("type") == "page")
                break
            except (OSError, StopIteration, ValueError):
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.3)
        from websockets.sync.client import connect

        self.ws = connect(target["webSocketDebuggerUrl"], max_size=None)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, js: str) -> Any:
        return self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"].get(
            "value"
        )

    def wait_for(self, texts: list[str], scope: str = "body", timeout: float = 20.0) -> str:
        """Text and HTML of the first element matching `scope` once every text shows in it."""
        js = (
            f"(() => {{ const el = document.querySelector({json.dumps(scope)});"
            " return el ? el.innerText + el.innerHTML : '' })()"
        )
        deadline = time.monotonic() + timeout
        while True:
            dom = html.unescape(self.eval(js) or "")
            if (dom and all(t in dom for t in texts)) or time.monotonic() > deadline:
                time.sleep(1.0)  # let images and layout settle before a screenshot
                return dom
            time.sleep(0.5)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(1.0)

    def click_tab(self, tab_id: str, timeout: float = 20.0) -> bool:
        """Click a tab of the UI (`li.p-tab#<id>`) once it exists; True if it became active."""
        js = (
            f"(() => {{ const el = document.querySelector('li.p-tab#{tab_id}');"
            " if (!el) return false; el.click(); return el.classList.contains('p-tab__active') })()"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(js):
                return True
            time.sleep(0.5)
        return False

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _check(
    api_url: str, ui: str, run_id: str, plate_id: str, out: Path, exe: str, work: Path
) -> list[str]:
    runs, arts = _wait_for_records(api_url, run_id)
    problems: list[str] = []
    by_key = {a["key"]: a for a in arts if a.get("key")}
    page = f"{ui}/runs/flow-run/{run_id}"
    browser = Browser(exe, work / "chromium-profile")

    def check(what: str, shot: str, expect: list[str], scope: str = "body") -> str:
        dom = browser.wait_for(expect, scope)
        browser.screenshot(out / shot)
        missing = [e for e in expect if e not in dom]
        if missing:
            more = " …" if len(missing) > 5 else ""
            problems.append(f"{what}: {len(missing)} missing, e.g. {missing[:5]}{more}")
        print(f"{what}: {'ok' if not missing else f'{len(missing)} missing'} -> {shot}")
        return dom

    try:
        browser.goto(page)
        check("flow-run page", "flow-run.png", [f"plate-{plate_id}", "Completed", "Task Runs"])
        names = [r["name"] for r in runs]
        if len(names) < 4:
            problems.append(f"only {len(names)} task runs in the API")
        if not browser.click_tab("task-runs"):
            problems.append("no Task Runs tab on the flow-run page")
        # only inside the tab's panel (the logs also name task runs); it pages in tens
        shown = [n for n in names if "·" in n][:8]
        check("task-runs tab", "task-runs.png", shown, scope="#task-runs-content")
        if not browser.click_tab("artifacts"):
            problems.append("no Artifacts tab on the flow-run page")
        check("artifacts tab", "artifacts-tab.png", sorted(by_key), scope="#artifacts-content")

        slug = plate_id.lower()
        pages = {
            f"thumbnails-{slug}": ("artifact-thumbnails.png", ["data:image/png;base64,"]),
            f"wells-{slug}": ("artifact-wells.png", [*WELLS, "completed"]),
            f"plan-{slug}": ("artifact-plan.png", ["project", "stitch", "count", "zarr"]),
            f"plan-config-{slug}": ("artifact-config.png", ["num_workers", "default"]),
            f"progress-{slug}": ("artifact-progress.png", ["100"]),
            f"output-{slug}": ("artifact-output.png", ["file://"]),
        }
        for key, (shot, expect) in pages.items():
            if key not in by_key:
                problems.append(f"artifact {key} not in the API")
                continue
            browser.goto(f"{ui}/artifacts/artifact/{by_key[key]['id']}")
            check(key, shot, expect)
            if key.startswith("thumbnails-"):
                imgs = browser.eval(
                    "[...document.images].filter(i => i.src.startsWith('data:image/png')"
                    " && i.complete && i.naturalWidth > 0).length"
                )
                print(f"  {imgs} thumbnails decoded and displayed")
                if (imgs or 0) < len(WELLS):
                    problems.append(f"{key}: {imgs} of {len(WELLS)} thumbnails displayed")
    finally:
        browser.close()
    return problems


if __name__ == "__main__":
    sys.exit(main())
