"""A real worker's operator-facing edges: where it listens, how it answers HTTP errors, which
series it exports from the start, and what it refuses to start with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from streamlearn.metrics import DEAD_LETTER_REASONS, DEAD_LETTER_SOURCES
from streamlearn.settings import load_settings
from streamlearn.tools.infra import free_port
from tests.helpers import wait_for


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                if len(addr) == 8:
                    out.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
                else:
                    out.add("::" if set(addr) == {"0"} else addr)
    return out


def _scrape(base: str) -> dict[str, dict[tuple, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(_request(base + "/metrics")[2].decode()):
        for smp in fam.samples:
            out.setdefault(smp.name, {})[tuple(sorted(smp.labels.items()))] = smp.value
    return out


def _request(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_worker_binds_web_host_answers_errors_in_json_and_exports_zero_series(make_settings, start_worker):
    s = make_settings(web_host="127.0.0.2")  # a loopback alias: reachable here, but not 127.0.0.1
    worker = start_worker(s)
    port = worker.process.web_port
    base = f"http://127.0.0.2:{port}"
    wait_for(lambda: _listening(port), 30, "the HTTP server to listen")
    assert _listening(port) == {"127.0.0.2"}, "bound to web_host only, not all interfaces"
    assert _request(f"{base}/health")[0] == 200
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        raise AssertionError("answered on 127.0.0.1 although web_host is 127.0.0.2")
    except urllib.error.URLError as err:
        assert isinstance(err.reason, ConnectionRefusedError), err
    wait_for(lambda: f"listening on http://127.0.0.2:{port}" in worker.log(), 30, "the log line naming the address")

    # errors outside the views answer JSON like the API's own
    for method, path, code, error in (("GET", "/nope", 404, "not_found"), ("DELETE", "/score", 405,
                                      "method_not_allowed"), ("POST", "/health", 405, "method_not_allowed")):
        status, ctype, body = _request(base + path, method, b"" if method == "POST" else None)
        assert (status, ctype.split(";")[0]) == (code, "application/json"), (method, path, status, ctype, body)
        answer = json.loads(body)
        assert answer["error"] == error and path in answer["detail"], answer
    status, ctype, body = _request(base + "/score", "POST", b"x" * (s.max_message_bytes + 1))
    assert status == 413 and json.loads(body)["error"] == "limit"
    status, ctype, body = _request(base + "/score", "POST", b"{not json")
    assert status == 400 and json.loads(body)["error"] == "invalid_json"

    # labelled counters exist at 0 for every known label before anything happened
    m = _scrape(base)
    dead = m["streamlearn_dead_letters_total"]
    want = {(("reason", r), ("source", src)) for r in DEAD_LETTER_REASONS for src in DEAD_LETTER_SOURCES}
    assert want <= set(dead) and all(dead[k] == 0 for k in want)
    assert m["streamlearn_model_refusals_total"] == {(("model", s.model_name),): 0.0}
    assert {k: v for k, v in m["streamlearn_http_requests_total"].items() if ("endpoint", "other") in k} == {
        (("code", "404"), ("endpoint", "other")): 1.0, (("code", "405"), ("endpoint", "other")): 2.0}


def test_worker_refuses_the_development_key_outside_development_mode(make_settings, start_worker):
    s = make_settings(development=False)
    env = {**os.environ, **s.to_env(), "STREAMLEARN_WEB_PORT": str(free_port())}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streamlearn", "worker"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode != 0 and time.monotonic() - t0 < 30
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "development key" in lines[0] and "STREAMLEARN_ARTIFACT_KEY" in lines[0], proc.stderr
    # with its own key the same worker starts and serves
    start_worker(make_settings(development=False, artifact_key="k" * 32))


def test_embedded_infrastructure_hands_development_mode_to_its_workers(infra, monkeypatch):
    env = infra.env()  # what the demo (and `infra up`) hand to their workers
    assert env["STREAMLEARN_DEVELOPMENT"] == "1"
    monkeypatch.setenv("STREAMLEARN_DEVELOPMENT", env["STREAMLEARN_DEVELOPMENT"])
    assert load_settings().development is True
