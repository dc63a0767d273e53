"""``streamlearn plan``: what a project declares, and what changed against what Redis recorded.

Like ``feast plan``: nothing is written. The feature view's version is compared with the
definition the feature-view catalog recorded when a worker first served it
(:mod:`streamlearn.featurestore.catalog`): unchanged, new (recorded at the next worker
start), or changed without a version bump (the worker would refuse to start).
"""

from __future__ import annotations

from typing import Any

from streamlearn.featurestore import catalog
from streamlearn.featurestore.declare import diff
from streamlearn.project import Project, load_events, project_for
from streamlearn.settings import Settings, redact_url


def make_plan(settings: Settings, project: Project | None = None) -> dict[str, Any]:
    p = project or project_for(settings)
    sample = list(load_events(p.sample, limit=1000)) if p.sample else None
    view = p.view
    out: dict[str, Any] = {
        "project": {"name": p.name, "directory": str(p.directory) if p.directory else "(built-in)",
                    "task": p.task.to_json(), "description": p.description},
        "view": view.describe(sample),
        "namespace": p.keys.entity("<entity>"),
        "models": {"name": settings.model_name, "champion": p.champion, "challenger": p.challenger,
                   "specs": p.specs if p.directory else {}},
        "topics": {k: getattr(settings, f"topic_{k}") for k in ("events", "predictions", "feedback", "deadletter")},
        "redis": {"url": redact_url(settings.redis_url), "prefix": settings.redis_prefix},
    }
    out["recorded"] = _compare(settings, p)
    return out


def _compare(settings: Settings, p: Project) -> dict[str, Any]:
    import redis

    view = p.view
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        rec = catalog.recorded(client, settings.redis_prefix, view.name, view.version)
        known = catalog.versions(client, settings.redis_prefix, view.name)
        older = [v for v in known if v < view.version]
        base = catalog.recorded(client, settings.redis_prefix, view.name, older[-1]) if older else None
    except redis.exceptions.ConnectionError as exc:
        return {"status": "not compared", "detail": f"Redis at {redact_url(settings.redis_url)} did not answer ({exc})"}
    finally:
        client.close()
    if rec is None:
        status = {"status": "new", "detail": f"version {view.version} is recorded when a worker first serves it"}
        if base is not None:
            status["changes_since"] = {"version": base["version"], "lines": diff(base, view.record())}
        return status
    if rec.get("fingerprint") == view.fingerprint:
        return {"status": "unchanged", "detail": f"matches the definition recorded for version {view.version}"}
    return {"status": "changed", "detail": f"version {view.version} was first served with another definition: "
                                           f"bump features.version, or the worker refuses to start",
            "lines": diff(rec, view.record())}


def render_plan(plan: dict[str, Any]) -> str:
    pj, v, m = plan["project"], plan["view"], plan["models"]
    task = pj["task"]
    lines = [f"project {pj['name']} ({pj['directory']}): task {task.get('kind')}"
             + (f", classes {task['classes']}" if task.get("classes") else "")]
    lines.append(f"feature view {v['name']} v{v['version']} (fingerprint {v['fingerprint']}); "
                 f"entity state at {plan['namespace']}")
    lines.append(f"  {len(v['features'])} features:")
    for f in v["features"]:
        lines.append(f"    {f['name']:<40} {f['kind']:<18} {f['block']}")
    if v.get("observed_features"):
        lines.append(f"  observed on the sample: {len(v['observed_features'])} features")
    lines.append(f"  entity state keys: {', '.join(v['state_keys']) or '(none: stateless view)'}")
    b = v.get("redis_bytes_per_entity") or {}
    if b:
        lines.append(f"  Redis bytes per entity: ~{b.get('estimate')} ({b.get('basis')})")
    if v.get("trending"):
        lines.append(f"  trending by design (not drift-tested with a two-sample test): {', '.join(v['trending'])}")
    for problem in v.get("problems", []):
        lines.append(f"  PROBLEM: {problem}")
    lines.append(f"models {m['name']}: champion {m['champion']}"
                 + (f", drift challenger {m['challenger']}" if m.get("challenger") else ""))
    for name, spec in (m.get("specs") or {}).items():
        lines.append(f"  spec {name} = {spec}")
    lines.append("topics: " + ", ".join(f"{k} {t}" for k, t in plan["topics"].items()))
    r = plan["recorded"]
    lines.append(f"against Redis ({plan['redis']['url']}, prefix {plan['redis']['prefix']}): {r['status']}: "
                 f"{r['detail']}")
    for line in r.get("lines", []):
        lines.append(f"  {line}")
    since = r.get("changes_since")
    if since:
        lines.append(f"  changes since version {since['version']}:")
        lines.extend(f"    {line}" for line in since["lines"])
    return "\n".join(lines)


__all__ = ["make_plan", "render_plan"]
