"""The ``streamlearn`` command's edges without a broker: every expected mistake is one
``streamlearn: ...`` line and a non-zero exit, never a traceback; deprecated spellings work
with a warning. (Unreachable addresses are closed local ports: nothing listens there.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamlearn.cli.compat import rewrite
from streamlearn.cli.io import tail_kind
from streamlearn.tools.harness import free_port, log_tail


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60
        ) -> tuple[subprocess.CompletedProcess, float]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    base["COLUMNS"] = "400"  # typer's usage box wraps at the terminal width: keep paths on one line
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streamlearn", *args], capture_output=True, text=True,
                          timeout=timeout, env={**base, **(env or {})}, stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("streamlearn: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(("env", "expected"), [
    ({"STREAMLEARN_TOPIC_PARTITIONS": "abc"}, "STREAMLEARN_TOPIC_PARTITIONS='abc'"),
    ({"STREAMLEARN_CONFIG": "/nonexistent/streamlearn.toml"}, "STREAMLEARN_CONFIG=/nonexistent/streamlearn.toml"),
])
def test_bad_settings_are_one_line_and_exit_2(env, expected):
    proc, _ = run("settings", env=env)
    assert proc.returncode == 2
    assert expected in one_error_line(proc)


def test_gate_eval_with_negative_runs_is_a_usage_error_not_a_traceback():
    proc, _ = run("gate-eval", "--runs", "-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--runs" in proc.stderr and "greater than or equal to 1" in proc.stderr


def test_version():
    from importlib.metadata import version

    proc, _ = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"streamlearn {version('streamlearn')}"


def test_unreachable_redis_is_one_line_naming_the_address():
    port = free_port()
    proc, secs = run("models", "list", env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert f"127.0.0.1:{port}" in line and "REDIS_URL" in line
    assert secs < 30  # python start-up on a loaded machine included; the client gives up in seconds


@pytest.mark.parametrize("command", [["produce", "--generate", "cards", "--events", "10"], ["tail", "predictions"],
                                     ["topics", "create"]])
def test_unreachable_broker_is_one_line_within_seconds(command):
    port = free_port()
    proc, secs = run(*command, env={"KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    assert proc.returncode != 0
    line = one_error_line(proc)  # librdkafka's own log lines are off
    assert f"cannot reach the Kafka broker at 127.0.0.1:{port}" in line and "KAFKA_BOOTSTRAP" in line
    assert "Connection refused" in line
    assert secs < 30  # was 31 s (produce) and a traceback (tail); the check itself gives up by 8 s


def test_verbose_shows_the_client_log():
    port = free_port()
    proc, _ = run("tail", "predictions", "--verbose", env={"KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) > 1 and "Connection refused" in proc.stderr.splitlines()[0]


def test_deprecated_produce_from_still_reads_a_file_with_a_warning(tmp_path):
    proc, _ = run("produce", "--from", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2
    assert "streamlearn: warning: --from is deprecated, use --input" in proc.stderr
    assert "no such file" in proc.stderr and str(tmp_path / "missing.jsonl") in proc.stderr


def test_rewrite_table():
    assert rewrite(["produce", "--from", "e.jsonl"]) == (["produce", "--input", "e.jsonl"],
                                                         ["--from is deprecated, use --input"])
    assert rewrite(["feedback", "--from=-"])[0] == ["feedback", "--input=-"]
    assert rewrite(["tail", "lifecycle", "--since", "2024-05-01"])[0] == ["tail", "lifecycle", "--from", "2024-05-01"]
    assert rewrite(["retrain", "--train-from", "1", "--eval-to", "2"])[0] == ["retrain", "--from", "1", "--to", "2"]
    assert rewrite(["backtest", "--model", "logreg", "--model", "hat"]) == (
        ["backtest", "--spec", "logreg", "--spec", "hat"], ["--model is deprecated, use --spec"])
    # --json is a flag on demo/bench; a following value is the deprecated file spelling
    new, warnings = rewrite(["demo", "--events", "30", "--json", "s.json"])
    assert new == ["demo", "--events", "30", "--json-out", "s.json"] and "--json-out FILE" in warnings[0]
    assert rewrite(["demo", "--json"]) == (["demo", "--json"], [])
    assert rewrite(["demo", "--json", "--no-replay"]) == (["demo", "--json", "--no-replay"], [])
    assert rewrite(["bench", "--json=b.json"])[0] == ["bench", "--json-out=b.json"]
    # republish: the old form (no --topic, --to TOPIC) and the new one (--topic T --to TIME)
    assert rewrite(["replay", "republish", "--to", "my.events"])[0] == ["replay", "republish", "--topic", "my.events"]
    new, warnings = rewrite(["replay", "republish", "--to", "x", "--from", "0", "--to-time", "99"])
    assert new == ["replay", "republish", "--topic", "x", "--from", "0", "--to", "99"] and len(warnings) == 2
    assert rewrite(["replay", "republish", "--topic", "x", "--to", "99"])[1] == []
    # other commands, and values after `--`, are left alone
    assert rewrite(["tail", "predictions", "--from", "0"]) == (["tail", "predictions", "--from", "0"], [])
    assert rewrite(["replay", "inspect", "--json"]) == (["replay", "inspect", "--json"], [])
    assert rewrite(["--project", "produce", "demo", "--json", "x"])[0] == [
        "--project", "produce", "demo", "--json-out", "x"]
    assert rewrite(["produce", "--", "--from"])[0] == ["produce", "--", "--from"]


def test_tail_kinds_singular_and_plural():
    assert [tail_kind(k) for k in ("prediction", "predictions", "shadows", "dead-letter", "dead_letters",
                                   "deadletter", "lifecycles", "drift")] == [
        "predictions", "predictions", "shadow", "dead-letters", "dead-letters", "dead-letters", "lifecycle", "drift"]
    assert tail_kind("bogus") == "bogus"


def test_log_tail_starts_at_the_last_error_line(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text("starting\n│ frame │\n  ValueError: unknown model spec 'bogus'; known:\n  ['logreg']\n\n")
    assert log_tail(log) == "  ValueError: unknown model spec 'bogus'; known:\n  ['logreg']"
    log.write_text("\n".join(f"line {i}" for i in range(30)))
    assert log_tail(log, lines=3) == "line 27\nline 28\nline 29"
    assert log_tail(tmp_path / "none.log") == ""


def test_bench_profile_without_py_spy_is_refused_before_any_variant_runs(tmp_path):
    # a PATH without py-spy (the interpreter is called by its absolute path)
    proc, took = run("bench", "--only", "bare", "--profile", str(tmp_path / "prof"),
                     env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "py-spy" in proc.stderr and "--profile" in proc.stderr
    assert "bare River loop" not in proc.stdout  # refused up front, not after minutes of work
