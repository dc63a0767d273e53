"""``streamlearn models ...``: inspect and steer the models of a running worker."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

import redis
import typer
from rich.console import Console
from rich.table import Table

from streamlearn.cli.errors import CliError
from streamlearn.featurestore.keys import Keys
from streamlearn.models.registry.versions import open_registry
from streamlearn.settings import Settings, get_settings
from streamlearn.streams.loop import commands

app = typer.Typer(no_args_is_help=True, help="List, promote, roll back and retire model versions.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
console = Console()


def _client(s: Settings) -> redis.Redis:
    # bounded: an unreachable Redis is one line (streamlearn.cli.errors), not a hang
    return redis.Redis.from_url(s.redis_url, socket_connect_timeout=5, socket_timeout=10)


def _status(s: Settings) -> dict:
    raw = _client(s).get(Keys.from_settings(s).status)
    if not raw:
        raise CliError(f"no status for model {s.model_name!r} under Redis prefix {s.redis_prefix!r} at "
                       f"{s.redis_url}: is a worker running (and are STREAMLEARN_MODEL_NAME/_REDIS_PREFIX its own)?")
    return json.loads(raw)


def _refusal_watch(s: Settings) -> Any:
    """A reader of the lifecycle topic from its end (where the worker announces a refused
    command with its id), or None if the broker cannot be read (then only the status tells)."""
    from streamlearn.cli.kafka import check_broker, quiet_config
    from streamlearn.sdk import RecordConsumer

    try:
        check_broker(s, timeout=3.0)
        return RecordConsumer(s, s.topic_lifecycle, "lifecycle", on_invalid=lambda _: None,
                              **quiet_config(False))
    except Exception as exc:  # noqa: BLE001 - optional: the status still shows success
        typer.echo(f"note: cannot read {s.topic_lifecycle} ({exc}); a refusal shows only as a timeout", err=True)
        return None


def refusal(records: list[Any], cmd_id: str) -> str | None:
    """The reason of the lifecycle record refusing command ``cmd_id``, if one is among ``records``.

    >>> refusal([{"action": "refused", "reason": "bad command: version 99 is not loaded",
    ...           "details": {"command": "c1"}}], "c1")
    'version 99 is not loaded'
    >>> refusal([{"action": "promoted", "reason": "gate passed", "details": {}}], "c1") is None
    True
    """
    for rec in records:
        v = getattr(rec, "value", rec)
        if v.get("action") == "refused" and (v.get("details") or {}).get("command") == cmd_id:
            return str(v.get("reason", "")).removeprefix("bad command: ")
    return None


def send(s: Settings, cmd: dict, wait: float = 15.0, done=None) -> dict:
    """Queue a command for the worker and wait until its status shows it applied; a refusal
    (announced on the lifecycle topic with the command's id) is a one-line error at once."""
    cmd = {**cmd, "id": uuid.uuid4().hex}
    client = _client(s)
    _status(s)  # no worker: say so now, not after the wait
    watch = _refusal_watch(s)
    try:
        client.rpush(Keys.from_settings(s).control, commands.encode(cmd))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            st = _status(s)
            if done is None or done(st):
                return st
            if watch is None:
                time.sleep(0.2)
                continue
            reason = refusal(watch.poll(0.2), cmd["id"])
            if reason is not None:
                raise CliError(f"the worker refused {cmd['op']}: {reason}")
    finally:
        if watch is not None:
            watch.close()
    raise CliError(f"the worker did not apply {cmd['op']} within {wait:.0f}s: is its learner running? "
                   "(see the worker's log and `streamlearn tail lifecycle`)")


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json")) -> None:
    """Model versions with their stage and online metrics."""
    st = _status(get_settings())
    if as_json:
        typer.echo(json.dumps(st["models"]))
        return
    t = Table(title=f"model {st['model_name']}")
    for col in ("version", "spec", "stage", "labels learned", "metrics"):
        t.add_column(col)
    for m in st["models"]:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in m["metrics"].items())
        t.add_row(str(m["version"]), m["spec"], m["stage"], f"{m['labels_learned']:,}", metrics)
    console.print(t)


@app.command()
def show(version: int) -> None:
    """One version: its stage, metrics and stage history."""
    s = get_settings()
    st = _status(s)
    live = next((m for m in st["models"] if m["version"] == version), None)
    reg = open_registry(s)
    try:
        recorded = dataclasses.asdict(reg.get(s.model_name, version))
    except Exception:  # noqa: BLE001 - not (yet) mirrored: show what the worker runs
        recorded = None
    history = [dataclasses.asdict(t) for t in reg.history(s.model_name, version)] if recorded else []
    if live is None and recorded is None:
        raise typer.BadParameter(f"no version {version}")
    typer.echo(json.dumps({"live": live, "registry": recorded, "history": history}, indent=2, default=str))


@app.command()
def promote(version: int, reason: str = typer.Option("operator promote")) -> None:
    """Make VERSION the champion now (bypasses the gate: it is recorded as an operator action)."""
    send(get_settings(), {"op": "promote", "version": version, "reason": reason},
         done=lambda st: st["model_version"] == version)
    typer.echo(f"version {version} is champion")


@app.command()
def adopt(version: int, reason: str = typer.Option("adopted from the registry")) -> None:
    """Run registered VERSION (e.g. from `streamlearn retrain --register`) as a shadow challenger:
    it must pass the same gate (and canary) as any challenger."""
    send(get_settings(), {"op": "adopt", "version": version, "reason": reason},
         done=lambda st: any(m["version"] == version for m in st["models"]))
    typer.echo(f"version {version} runs in shadow")


@app.command()
def canary(version: int, fraction: float = typer.Option(0.1, "--fraction", min=0.0, max=1.0,
                                                       help="share of entities VERSION serves (0-1)"),
           reason: str = typer.Option("operator canary")) -> None:
    """Let VERSION serve `--fraction` F of entities (default 0.1); the canary monitor promotes or rolls it back."""
    send(get_settings(), {"op": "canary", "version": version, "fraction": fraction, "reason": reason},
         done=lambda st: (st.get("canary") or {}).get("version") == version)
    typer.echo(f"version {version} serves {fraction:.0%} of entities as a canary")


@app.command()
def rollback(reason: str = typer.Option("operator rollback")) -> None:
    """End the canary, or restore the previous champion."""
    s = get_settings()
    before = _status(s)
    st = send(s, {"op": "rollback", "reason": reason},
              done=lambda st: st["model_version"] != before["model_version"] or
              (before.get("canary") and not st.get("canary")))
    typer.echo(f"version {st['model_version']} is champion")


@app.command()
def retire(version: int, reason: str = typer.Option("operator retire")) -> None:
    """Stop running VERSION (not the champion)."""
    send(get_settings(), {"op": "retire", "version": version, "reason": reason},
         done=lambda st: all(m["version"] != version for m in st["models"]))
    typer.echo(f"version {version} retired")


@app.command()
def add(spec: str, reason: str = typer.Option("operator add")) -> None:
    """Start a fresh shadow challenger from SPEC (it learns from now on)."""
    s = get_settings()
    n = len(_status(s)["models"])
    send(s, {"op": "add", "spec": spec, "reason": reason}, done=lambda st: len(st["models"]) > n)
    typer.echo(f"challenger {spec} started")
