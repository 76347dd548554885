"""The flow-run labels PATCH (dead_runs.record_run) against a busy SQLite server.

The server answers 503 at once when the run was written between its read and its write (SQLite
"database is locked"); Prefect's client would then sleep 2 s, 4 s, … per attempt. record_run
retries itself after short pauses instead, and only for answers worth retrying.
"""

from __future__ import annotations

import httpx
import pytest

from prefect_hcs.runtime import dead_runs


class _FakeClient:
    """Answers the labels PATCH with the given status codes, then 204."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[dict] = []

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update_flow_run_labels(self, run_id: str, labels: dict) -> None:
        self.calls.append(labels)
        if self.statuses:
            code = self.statuses.pop(0)
            request = httpx.Request("PATCH", f"http://api/flow_runs/{run_id}/labels")
            response = httpx.Response(code, request=request)
            raise httpx.HTTPStatusError(f"{code}", request=request, response=response)


@pytest.fixture
def fake(monkeypatch):
    """Install a fake Prefect client; returns (install(statuses) -> client, recorded pauses)."""
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    pauses: list[float] = []
    monkeypatch.setattr("time.sleep", pauses.append)

    def install(statuses: list[int]) -> _FakeClient:
        client = _FakeClient(statuses)

        def get_client(sync_client: bool = False) -> _FakeClient:
            # Prefect's own backoff (2 s, 4 s, …) must be off for this client
            assert PREFECT_CLIENT_MAX_RETRIES.value() == 0
            return client

        monkeypatch.setattr("prefect.client.orchestration.get_client", get_client)
        return client

    return install, pauses


def test_a_busy_server_gets_the_labels_after_short_pauses(fake):
    install, pauses = fake
    client = install([503, 503])
    dead_runs.record_run("run-1", {"plate": "/data/P1"}, lease_url="/out/.hcs-lease.json")
    assert len(client.calls) == 3 and client.calls[0] == client.calls[2]
    assert client.calls[2][dead_runs.LEASE] == "/out/.hcs-lease.json"
    assert len(pauses) == 2 and sum(pauses) < 1.0, pauses  # Prefect's client: >= 2 s + 4 s


def test_a_refusal_is_not_retried_and_a_server_busy_for_long_fails(fake):
    install, pauses = fake
    client = install([404])
    with pytest.raises(httpx.HTTPStatusError):
        dead_runs.record_run("run-1", {})
    assert len(client.calls) == 1 and pauses == []

    client = install([503] * 50)
    with pytest.raises(httpx.HTTPStatusError):
        dead_runs.record_run("run-1", {})
    assert len(client.calls) == len(dead_runs.LABEL_RETRY_PAUSES) + 1
    assert sum(pauses) < 5.0, pauses
