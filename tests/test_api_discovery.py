"""Every command finds the Prefect API the way Prefect does, else reuses or starts one local server.

A temporary PREFECT_HOME gets a profile made with Prefect's own CLI (`prefect profile create`,
`prefect profile use`, `prefect config set PREFECT_API_URL=…`), nothing in the environment, and
each prefect-hcs command runs as a subprocess: everything it saves, loads or runs must land on
the test's real server, and no local server may be started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from prefect_hcs.runtime.api import RECORD, pick_port, port_free
from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server
BIN = Path(sys.executable).parent
STARTED = "started a local Prefect server"
# what a user's shell does not have (conftest sets some of these for the in-process tests)
_DROP = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_SERVER_API_PORT",
         "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE")  # fmt: skip


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env["PREFECT_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _prefect(env: dict[str, str], *args: str, expect: int = 0) -> None:
    out = subprocess.run(
        [str(BIN / "prefect"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == expect, out.stdout + out.stderr


def _hcs(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(
        [str(BIN / "prefect-hcs"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def _profile_home(tmp_path: Path, reachable: bool = True, **settings: str) -> dict[str, str]:
    """A fresh PREFECT_HOME whose active profile holds `settings`, set with Prefect's own CLI.

    With an API URL the settings go into a new profile `site` made active with `prefect profile
    use`; without one they go into the default profile (`ephemeral`, what a new user has).
    """
    env = _env(tmp_path / "prefect-home")
    pairs = [f"{k}={v}" for k, v in settings.items()]
    if "PREFECT_API_URL" in settings:
        _prefect(env, "profile", "create", "site")
        _prefect(env, "--profile", "site", "config", "set", *pairs)
        # `profile use` switches, then checks the API (exit 1 when it does not answer)
        _prefect(env, "profile", "use", "site", expect=0 if reachable else 1)
    elif pairs:
        _prefect(env, "config", "set", *pairs)
    return env


def _block_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "blocks"
    folder.mkdir()
    (folder / "global.yaml").write_text(
        f"block_type: hcs-global-config\nname: {name}\nvalues:\n  num_workers: 3\n"
    )
    return folder


def _flow_run_id(stdout: str) -> str:
    m = re.search(r"/runs/flow-run/([0-9a-f-]{36})", stdout)
    assert m, stdout
    return m.group(1)


def test_every_command_uses_the_api_of_the_active_profile(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    from prefect_hcs.blocks.config_blocks import LAYER_BLOCKS
    from prefect_hcs.runtime.flow import process_plate

    env = _profile_home(tmp_path, PREFECT_API_URL=prefect_server)
    name = f"site-{uuid.uuid4().hex[:8]}"
    ui = prefect_server.removesuffix("/api")

    applied = _hcs(env, "blocks", "apply", str(_block_folder(tmp_path, name)))
    assert applied.returncode == 0, applied.stderr
    assert LAYER_BLOCKS["global"].load(name, _sync=True).num_workers == 3  # on the test server

    explained = _hcs(env, "config", "explain", "-g", name, "--json")
    assert explained.returncode == 0, explained.stderr
    entry = json.loads(explained.stdout)["num_workers"]
    assert entry["value"] == 3 and entry["source"]["layer"] == "global"

    plate = tmp_path / "P1"
    make_plate(str(plate), format="imagexpress", wells=["A01", "A02"], sites=4, channels=1,
               z=1, size=96, seed=3)  # fmt: skip
    planned = _hcs(env, "plan", str(plate), "-g", name, "--json")
    assert planned.returncode == 0, planned.stderr
    for step in json.loads(planned.stdout)["resolved_config"].values():
        assert (
            step["num_workers"]["value"] == 3 and step["num_workers"]["source"]["layer"] == "global"
        )

    ran = _hcs(env, "run", str(plate), "-g", name, "--no-progress")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"{ui}/runs/flow-run/" in ran.stdout

    demo = _hcs(env, "demo", "--out", str(tmp_path / "demo"), "--no-progress")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    with get_client(sync_client=True) as client:
        for out in (ran, demo):
            assert client.read_flow_run(_flow_run_id(out.stdout)).state.is_completed()
        failed = client.create_flow_run(
            process_plate, parameters={"plate": str(tmp_path / "Gone")}, state=Failed()
        )
    listed = _hcs(env, "retry-failed", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert str(failed.id) in listed.stdout

    _serve_registers_on_the_profile_api(env, name)
    for out in (applied, explained, planned, ran, demo, listed):
        assert STARTED not in out.stdout + out.stderr
    assert not (Path(env["PREFECT_HOME"]) / RECORD).exists()  # no local server was started


def _serve_registers_on_the_profile_api(env: dict[str, str], name: str) -> None:
    from prefect.client.orchestration import get_client

    proc = subprocess.Popen(
        [str(BIN / "prefect-hcs"), "serve", "--name", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        found = None
        while time.monotonic() < deadline and proc.poll() is None and found is None:
            with get_client(sync_client=True) as client:
                try:
                    found = client.read_deployment_by_name(f"process-plate/{name}")
                except Exception:  # noqa: BLE001 - not registered yet
                    time.sleep(1)
        assert found is not None, proc.stdout.read() if proc.poll() is not None else "timeout"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_profile_api_that_does_not_answer_is_one_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    env = _profile_home(
        tmp_path, False, PREFECT_API_URL=dead, PREFECT_API_KEY="pnu_not-to-be-printed"
    )
    out = _hcs(env, "blocks", "apply", str(_block_folder(tmp_path, "x")))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert dead in lines[0] and "profile 'site'" in lines[0] and "does not answer" in lines[0]
    assert "pnu_not-to-be-printed" not in out.stdout + out.stderr
    assert not (Path(env["PREFECT_HOME"]) / RECORD).exists()


@pytest.mark.parametrize("how", ["option", "profile"])
def test_a_busy_requested_port_is_one_clear_line_and_starts_nothing(tmp_path, how):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        if how == "option":
            env = _profile_home(tmp_path)
            args = ["--server-port", str(port)]
        else:
            env = _profile_home(tmp_path, PREFECT_SERVER_API_PORT=str(port))
            args = []
        out = _hcs(env, *args, "blocks", "apply", str(_block_folder(tmp_path, "x")), timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    origin = "--server-port" if how == "option" else "PREFECT_SERVER_API_PORT"
    assert f"port {port} (from {origin})" in lines[0] and "another program" in lines[0]
    assert not (Path(env["PREFECT_HOME"]) / RECORD).exists()


def test_a_mistyped_plate_folder_is_one_line_and_starts_no_server(tmp_path):
    """With no API configured, `run` would start a local server: not for a plate that is not there."""
    env = _profile_home(tmp_path)
    home = Path(env["PREFECT_HOME"])
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    out = _hcs(env, "run", str(tmp_path / "no-such-plate"), timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "plate folder not found" in lines[0] and "no-such-plate" in lines[0], lines[0]
    assert STARTED not in out.stdout + out.stderr
    assert not (home / RECORD).exists()
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before  # nothing written


def test_a_busy_default_port_gives_way_to_a_free_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        chosen = pick_port(port, None)
        assert chosen != port and port_free(chosen)


def test_no_configured_api_starts_one_local_server_on_the_set_port_and_reuses_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _profile_home(tmp_path, PREFECT_SERVER_API_PORT=str(port))
    folder = _block_folder(tmp_path, "local-site")
    first = _hcs(env, "blocks", "apply", str(folder))
    record = Path(env["PREFECT_HOME"]) / RECORD
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"{STARTED} at http://127.0.0.1:{port}" in first.stderr
        data = json.loads(record.read_text())
        assert data["api_url"] == f"http://127.0.0.1:{port}/api" and data["port"] == port
        again = _hcs(env, "config", "explain", "-g", "local-site", "--json")
        assert again.returncode == 0, again.stderr
        assert STARTED not in again.stderr  # the recorded server is reused
        assert json.loads(again.stdout)["num_workers"]["value"] == 3
        assert json.loads(record.read_text())["pid"] == data["pid"]
    finally:
        if record.exists():
            os.killpg(json.loads(record.read_text())["pid"], signal.SIGTERM)


class _AuthProxy:
    """An HTTP front of the test server that, like Prefect Cloud, requires `Bearer <key>`."""

    def __init__(self, upstream: str, key: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        origin = upstream.removesuffix("/api")
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                outer.seen.append((self.path, self.headers.get("Authorization", "")))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {key}":
                    self._reply(401, b'{"detail": "Unauthorized"}', {})
                    return
                skip = {"host", "authorization", "content-length", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                r = httpx.request(self.command, origin + self.path, content=body,
                                  headers=headers, timeout=60)  # fmt: skip
                self._reply(r.status_code, r.content, r.headers)

            def _reply(self, code: int, content: bytes, headers) -> None:
                self.send_response(code)
                ctype = headers.get("content-type", "application/json")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_api_key_from_the_profile_is_sent_and_never_printed(prefect_server, tmp_path):
    from prefect_hcs.blocks.config_blocks import LAYER_BLOCKS

    key = f"pnu_{uuid.uuid4().hex}"
    proxy = _AuthProxy(prefect_server, key)
    name = f"keyed-{uuid.uuid4().hex[:8]}"
    try:
        env = _profile_home(tmp_path, PREFECT_API_URL=proxy.url, PREFECT_API_KEY=key)
        proxy.seen.clear()  # `prefect profile use` checks /health without the key
        applied = _hcs(env, "blocks", "apply", str(_block_folder(tmp_path, name)))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        explained = _hcs(env, "config", "explain", "-g", name, "--json")
        assert explained.returncode == 0, explained.stderr
        assert json.loads(explained.stdout)["num_workers"]["value"] == 3
        assert LAYER_BLOCKS["global"].load(name, _sync=True).num_workers == 3
        # every HTTP request carried the key (the events websocket authenticates in-band)
        http = [(p, a) for p, a in proxy.seen if not p.startswith("/api/events/")]
        assert http and {a for _, a in http} == {f"Bearer {key}"}, http

        _prefect(env, "config", "set", "PREFECT_API_KEY=pnu_wrong-key-not-to-be-printed")
        refused = _hcs(env, "blocks", "apply", str(tmp_path / "blocks"))
    finally:
        proxy.close()
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the credentials (HTTP 401)" in lines[0], refused.stderr
    for out in (applied, explained, refused):
        assert key not in out.stdout + out.stderr
        assert "wrong-key" not in out.stdout + out.stderr
