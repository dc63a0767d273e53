"""deploy/ and docker-compose.yml against the code: promtool on the rules, and consistency checks.

No Docker engine here, so the compose file is parsed and checked against what the code
really reads (settings, CLI commands, ports, metric names, mounted files).

promtool comes from Debian's ``prometheus`` package. It is fetched with ``apt-get download``
and unpacked into a cache (``dpkg-deb -x``) rather than installed with ``apt-get install``:
the package's postinst starts a Prometheus daemon on :9090 through its init script, which
a test run must not leave behind on a shared machine. A ``promtool`` on PATH is used as is.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from streamlearn import cli
from streamlearn.metrics import Metrics
from streamlearn.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
ALERTS = PROM / "alerts.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
MAIN_ALERTS = {"StreamlearnNoPredictions", "StreamlearnHighLatencyP99", "StreamlearnConsumerLagGrowing",
               "StreamlearnDeadLetterRate", "StreamlearnDriftDetected", "StreamlearnChampionMetricBelowFloor",
               "StreamlearnRollback", "StreamlearnFeatureStoreErrors", "StreamlearnConsumerOffsetGaps"}


# ------------------------------------------------------------------ promtool


def _fetch_promtool(cache: Path, package: str = "prometheus", tool: str = "promtool") -> Path:
    """Unpack Debian's ``package`` into ``cache``; returns the path of its ``tool``."""
    binary = cache / "usr" / "bin" / tool
    if binary.exists():
        return binary
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("promtool is not on PATH and this is not a Debian-based machine (no apt-get/dpkg-deb)")
    with tempfile.TemporaryDirectory() as tmp:
        def download() -> subprocess.CompletedProcess:
            return subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True,
                                  timeout=300)

        got = download()
        if got.returncode != 0:  # fresh machine: no package lists yet
            upd = subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600)
            if upd.returncode != 0:
                pytest.skip(f"cannot fetch Debian's {package} package (apt-get update failed): {upd.stderr[-500:]}")
            got = download()
        if got.returncode != 0:
            pytest.skip(f"cannot fetch Debian's {package} package: {got.stderr[-500:]}")
        deb = next(Path(tmp).glob(f"{package}_*.deb"))
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(cache)], check=True, timeout=120)
    return binary


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamlearn" / "prometheus-deb"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / "prometheus-deb.lock", "w") as lock:  # parallel runs fetch once
        fcntl.flock(lock, fcntl.LOCK_EX)
        binary = _fetch_promtool(cache)
    assert subprocess.run([str(binary), "--version"], capture_output=True).returncode == 0
    return str(binary)


@pytest.fixture(scope="session")
def amtool() -> str:
    """Alertmanager's checker, from Debian's prometheus-alertmanager package (unpacked, not installed)."""
    found = shutil.which("amtool")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamlearn" / "alertmanager-deb"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / "alertmanager-deb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        binary = _fetch_promtool(cache, "prometheus-alertmanager", "amtool")
    return str(binary)


def test_amtool_validates_the_alertmanager_config(amtool):
    out = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_validates_the_prometheus_config_and_rules(promtool):
    for args in (["check", "config", str(PROM / "prometheus.yml")], ["check", "rules", str(ALERTS)]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_cover_the_main_alerts(promtool):
    out = subprocess.run([promtool, "test", "rules", str(PROM / "alerts_test.yml")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    # every main alert has a case where it fires and one where it must stay quiet
    cases = [t for test in yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
             for t in test.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert MAIN_ALERTS <= fires, MAIN_ALERTS - fires
    assert MAIN_ALERTS <= quiet, MAIN_ALERTS - quiet
    defined = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert MAIN_ALERTS <= defined


# ------------------------------------------------------------------ metric names in rules and dashboard


def _families() -> dict[str, tuple[str, set[str]]]:
    """Exposed sample name -> (family, label names) for every family of the metrics module."""
    m = Metrics()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",)}
    out: dict[str, tuple[str, set[str]]] = {}
    for collector in list(m.registry._collector_to_names):  # noqa: SLF001 - the registry's own index
        fam = collector.describe()[0]
        labels = set(getattr(collector, "_labelnames", ())) | {"instance", "job"}
        if fam.type == "histogram":
            labels.add("le")
        for suffix in suffixes[fam.type]:
            out[fam.name + suffix] = (fam.name, labels)
    return out


SELECTOR = re.compile(r"\b(streamlearn_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")


def _check_exprs(exprs: list[str], where: str) -> None:
    known = _families()
    seen = 0
    for expr in exprs:
        for name, selector in SELECTOR.findall(expr):
            seen += 1
            assert name in known, f"{where}: {name} is not exposed by streamlearn/metrics.py ({expr})"
            for label, _ in MATCHER.findall(selector or ""):
                assert label in known[name][1], f"{where}: {name} has no label {label!r} ({expr})"
    assert seen, f"{where}: no streamlearn metric referenced"


def test_alert_rules_use_metric_names_the_code_exposes():
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    _check_exprs([r["expr"] for r in rules], "alerts.yml")


def _dashboard() -> dict[str, Any]:
    import json

    return json.loads((DEPLOY / "grafana" / "dashboards" / "streamlearn.json").read_text())


def test_dashboard_panels_cover_the_families_and_use_real_names():
    dash = _dashboard()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    exprs += [v["definition"] for v in dash["templating"]["list"]]
    _check_exprs(exprs, "dashboard")
    text = "\n".join(exprs)
    for family in ("streamlearn_events_received_total", "streamlearn_predictions_total",
                   "streamlearn_event_to_prediction_seconds_bucket", "streamlearn_consumer_lag",
                   "streamlearn_model_metric", "streamlearn_drift_detections_total",
                   "streamlearn_model_promotions_total", "streamlearn_model_rollbacks_total",
                   "streamlearn_feature_store_errors_total", "streamlearn_store_retries_total"):
        assert family in text, f"no panel for {family}"
    assert {"Drift", "Promotions", "Rollbacks"} <= {a["name"] for a in dash["annotations"]["list"]}
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


# ------------------------------------------------------------------ docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the streamlearn image."""
    return {n: s for n, s in compose["services"].items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?([-?])([^}]*))?\}")


def _interpolate(value: Any) -> str:
    """Compose ``${VAR:-default}`` -> default; ``${VAR:?error}`` (required) -> a stand-in value."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) == "-" else f"required-{m.group(1).lower()}",
                             str(value))


def _setting_for(env_name: str) -> str:
    fields = Settings.model_fields
    for name, field in fields.items():
        aliases = set(getattr(field.validation_alias, "choices", None) or ())
        if env_name == ENV_PREFIX + name.upper() or env_name in aliases:
            return name
    raise AssertionError(f"{env_name} is not read by streamlearn.settings.Settings")


def test_compose_env_vars_are_settings_the_code_reads(compose, monkeypatch):
    ours = _ours(compose)
    assert {"topics", "worker", "archiver", "producer", "labeler"} <= set(ours)
    for name, svc in ours.items():
        env = {k: _interpolate(v) for k, v in svc["environment"].items()}
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX) or k in ("KAFKA_BOOTSTRAP", "REDIS_URL")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()  # validates every value as the worker would
        for key, value in env.items():
            field = _setting_for(key)
            got = getattr(settings, field)
            got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
            assert str(got) == value, f"{name}: {key}={value!r} read as {field}={got!r}"
    assert "STREAMLEARN_ARTIFACT_KEY" in ours["worker"]["environment"], "production must set its own HMAC key"
    assert ":?" in ours["worker"]["environment"]["STREAMLEARN_ARTIFACT_KEY"], "and compose must refuse to run without"


def _resolve_cli(args: list[str]) -> Any:
    """Parse ``args`` exactly as ``streamlearn`` would (unknown commands/options raise).

    Duck-typed: recent typer versions ship their own copy of click's classes.
    """
    cmd = typer.main.get_command(cli.app)
    path = ["streamlearn"]
    while hasattr(cmd, "list_commands"):  # a group
        assert args, f"{' '.join(path)} needs a subcommand"
        name, args = args[0], args[1:]
        sub = cmd.get_command(cmd.context_class(cmd), name)
        assert sub is not None, f"`{' '.join(path)} {name}` is not a command"
        path.append(name)
        cmd = sub
    cmd.make_context(" ".join(path), list(args))  # raises click.UsageError on anything unknown
    return cmd


def test_compose_commands_exist_in_the_cli(compose):
    ours = _ours(compose)
    for svc in ours.values():
        _resolve_cli(list(svc["command"]))
    assert ours["worker"]["command"] == ["worker"] and ours["topics"]["command"] == ["topics", "create"]
    with pytest.raises(Exception, match="No such option"):  # the check rejects what the CLI would
        _resolve_cli(["produce", "--no-such-option"])
    with pytest.raises(AssertionError, match="is not a command"):
        _resolve_cli(["no-such-command"])
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["streamlearn"]' in dockerfile


def _bind_mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path of each bind mount (``./src:/target[:ro]``)."""
    out = {}
    for vol in svc.get("volumes", []):
        src, target = vol.split(":")[:2]
        if src.startswith("./"):
            out[target] = ROOT / src
    return out


def test_compose_ports_mounts_and_dependencies_match(compose):
    services = compose["services"]
    worker = services["worker"]
    defaults = Settings.model_fields

    # the worker's HTTP port: what it listens on, what Prometheus scrapes, what health checks hit
    port = int(worker["environment"]["STREAMLEARN_WEB_PORT"])
    assert port == defaults["web_port"].default
    assert worker["environment"]["STREAMLEARN_WEB_HOST"] == "0.0.0.0", "127.0.0.1 cannot be scraped"
    assert str(port) in worker["expose"] and "ports" not in worker, "no fixed host port: --scale must work"
    assert f"127.0.0.1:{port}/ready" in " ".join(worker["healthcheck"]["test"])
    prom_cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in prom_cfg["scrape_configs"] if j["job_name"] == "streamlearn-workers")
    sd = job["dns_sd_configs"][0]
    assert sd["port"] == port and sd["names"] == ["worker"] and job["metrics_path"] == "/metrics"
    assert f"EXPOSE {port}" in (DEPLOY / "Dockerfile").read_text()
    assert 'job="streamlearn-workers"' in ALERTS.read_text()

    # every bind-mounted file exists
    for name, svc in services.items():
        for target, src in _bind_mounts(svc).items():
            assert src.exists(), f"{name} mounts missing {src} at {target}"

    # Prometheus loads the mounted config, whose rule files are mounted too
    prom = services["prometheus"]
    mounts = _bind_mounts(prom)
    cfg_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    assert mounts[cfg_path] == PROM / "prometheus.yml"
    for rule_file in prom_cfg["rule_files"]:
        target = str(Path(cfg_path).parent / rule_file)
        assert mounts.get(target) == ALERTS, f"rule file {target} is not the mounted alerts.yml"
    assert prom["ports"] == ["127.0.0.1:9090:9090"], "no authentication: published on this host only"

    # Prometheus sends its alerts to the Alertmanager service, whose mounted config exists
    am = services["alertmanager"]
    (target,) = prom_cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093" and am["ports"] == ["127.0.0.1:9093:9093"]
    am_cfg_path = next(a.split("=", 1)[1] for a in am["command"] if a.startswith("--config.file="))
    assert _bind_mounts(am)[am_cfg_path] == ALERTMANAGER
    am_cfg = yaml.safe_load(ALERTMANAGER.read_text())
    assert am_cfg["route"]["receiver"] in {r["name"] for r in am_cfg["receivers"]}
    assert prom["depends_on"]["alertmanager"] == {"condition": "service_healthy"}

    # Grafana: provisioning mounted where Grafana reads it; the provider path holds the dashboard
    graf = services["grafana"]
    gm = _bind_mounts(graf)
    prov = gm["/etc/grafana/provisioning"]
    provider = yaml.safe_load((prov / "dashboards" / "streamlearn.yml").read_text())["providers"][0]
    assert (gm[provider["options"]["path"]] / "streamlearn.json").exists()
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"
    assert {p["datasource"]["uid"] for p in _dashboard()["panels"] if "datasource" in p} == {ds["uid"]}

    # Kafka in KRaft mode from the official image; healthchecks and start order
    kafka = services["kafka"]
    kenv = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kenv["KAFKA_PROCESS_ROLES"]
    advertised = dict(a.split("://") for a in kenv["KAFKA_ADVERTISED_LISTENERS"].split(","))
    inside = worker["environment"]["KAFKA_BOOTSTRAP"]
    assert advertised["PLAINTEXT"] == inside, "the workers' bootstrap is the internal listener"
    # a listener the host reaches (the README's kcat and SDK steps): advertised as localhost:9094
    assert advertised["EXTERNAL"] == "localhost:9094" and "127.0.0.1:9094:9094" in kafka["ports"]
    assert "EXTERNAL://:9094" in kenv["KAFKA_LISTENERS"] and "EXTERNAL:PLAINTEXT" in \
        kenv["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert kenv["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"
    # topics and offsets survive a recreate: the log dir is a named volume
    volumes = dict(v.split(":")[:2][::-1] for v in kafka["volumes"])
    assert volumes[kenv["KAFKA_LOG_DIRS"]] in compose["volumes"]
    for name in ("kafka", "redis", "worker", "archiver", "prometheus", "alertmanager", "grafana"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert worker["depends_on"] == {"kafka": {"condition": "service_healthy"},
                                    "redis": {"condition": "service_healthy"},
                                    "topics": {"condition": "service_completed_successfully"}}
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"
    assert services["producer"]["profiles"] == ["demo"] and services["labeler"]["profiles"] == ["demo"]

    # the archiver writes where its volume is mounted, a directory the image's user owns
    archiver = services["archiver"]
    archive_dir = archiver["environment"]["STREAMLEARN_ARCHIVE_DIR"]
    assert any(v.split(":")[1] == archive_dir for v in archiver["volumes"])
    assert f"install -d -o streamlearn -g streamlearn {archive_dir}" in (DEPLOY / "Dockerfile").read_text()


def test_dockerfile_copies_every_package_folder():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for folder in folders:
        assert f"COPY {folder}/ {folder}/" in dockerfile, f"deploy/Dockerfile does not copy {folder}/"
        assert f"!{folder}/" in ignore, f"deploy/Dockerfile.dockerignore keeps {folder}/ out of the build context"


def test_compose_is_safe_by_default(compose):
    services = compose["services"]
    # Grafana: the admin password has no default (compose refuses to start without it), no anonymous access
    genv = services["grafana"]["environment"]
    password = genv["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GF_ADMIN_PASSWORD:?"), "no default admin password"
    assert str(genv.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in genv

    # Redis: a memory limit, and no eviction of state (see the comment in the compose file)
    cmd = services["redis"]["command"]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert re.fullmatch(r"\$\{REDIS_MAXMEMORY:-\d+[kmg]b\}", cmd[cmd.index("--maxmemory") + 1])

    # the workers stop on their own before compose's grace period ends in SIGKILL
    grace = services["worker"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > Settings.model_fields["stop_timeout_s"].default

    # --scale worker=N: nothing that must be unique per container
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker


def test_archiver_healthcheck_runs_the_shipped_script(compose):
    test = compose["services"]["archiver"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    script, check = test[2], test[3]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"COPY deploy/healthcheck.py {script}" in dockerfile
    assert "!deploy/healthcheck.py" in (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert check in module.CHECKS


def test_image_installs_pinned_runtime_dependencies_only():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/constraints.txt /src/constraints.txt" in dockerfile
    assert "RUN pip install -c constraints.txt . " in dockerfile, "the image installs with the constraints, no extras"
    assert "!deploy/constraints.txt" in (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    lines = [ln for ln in (DEPLOY / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    pins = {}
    for line in lines:
        name, _, version = line.partition("==")
        assert version and not set(version) & set("<>=!~*, "), f"not an exact pin: {line}"
        pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in map(Requirement, project["dependencies"]):
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep.name} is not pinned in deploy/constraints.txt (run python deploy/constraints.py)"
        assert dep.specifier.contains(pins[name], prereleases=True), f"{dep.name}=={pins[name]} breaks {dep}"
    extras = project["optional-dependencies"]
    for dep in map(Requirement, extras["embedded"]):
        assert canonicalize_name(dep.name) not in pins, f"{dep.name} (embedded extra) must not be in the image"
