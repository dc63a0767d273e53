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
        # the project folder records no fingerprint: which definition a version was first
        # served with is only in the catalog, in Redis (checked by the worker at start)
        return {"status": "not compared",
                "detail": f"Redis at {redact_url(settings.redis_url)} did not answer ({exc})",
                "lines": [f"whether version {view.version}'s definition changed since a worker first served it is "
                          "recorded only in that Redis (the project folder keeps no fingerprint): if you changed "
                          f"[features] since, bump features.version to {view.version + 1}, or the worker refuses "
                          "to start"]}
    finally:
        client.close()
    if rec is None:
        status = {"status": "new", "detail": f"version {view.version} is recorded when a worker first serves it "
                                             "(a demo serves it from its own Redis, not this one)"}
        if base is not None:
            status["changes_since"] = {"version": base["version"], "lines": diff(base, view.record())}
        return status
    if rec.get("fingerprint") == view.fingerprint:
        return {"status": "unchanged", "detail": f"matches the definition recorded for version {view.version}"}
    return {"status": "changed", "detail": f"version {view.version} was first served with another definition: "
                                           f"bump features.version, or the worker refuses to start",
            "lines": diff(rec, view.record())}


def _columns(features: list[dict[str, Any]], observed: list[str] | None) -> tuple[list[str], int]:
    """Per declared feature, how many vector columns the sample produced for it (a hashed or
    one-hot field is one declaration and several columns), and how many columns no named
    declaration claims: a function's (or every raw field's); several functions share them ("*")."""
    if observed is None:
        return ["" for _ in features], 0
    left = set(observed)
    counts: list[int | None] = []
    for f in features:
        name = f["name"]
        if name.startswith("<"):  # <returned by fn>, <every raw field>: counted last
            counts.append(None)
            continue
        if "<" in name:  # merchant#<0..15>, zone=<value>
            prefix = name[: name.index("<")]
            mine = {c for c in left if c.startswith(prefix)}
        else:
            mine = {name} & left
        left -= mine
        counts.append(len(mine))
    rest = [i for i, c in enumerate(counts) if c is None]
    if len(rest) == 1:
        counts[rest[0]] = len(left)
    return [str(c) if c is not None else "*" for c in counts], len(left)


def _feature_table(v: dict[str, Any]) -> list[str]:
    """The declared features, one row each, with the vector columns each became on the sample:
    columns sized to their content, so it fits 80 columns unless a name itself is long."""
    feats, observed = v["features"], v.get("observed_features")
    cols, shared = _columns(feats, observed)
    # a function's row by its import path (the kind column says "function"); the declaring key
    # under [features] ("aggregates[0]"), without the block's kind, which the kind column has
    names = [f"<{f['name'].removeprefix('<returned by ')}" if f["name"].startswith("<returned by ") else f["name"]
             for f in feats]
    where = [f["block"].split(" (")[0].removeprefix("features.") for f in feats]
    rows = [(n, f["kind"], c, w) for n, f, c, w in zip(names, feats, cols, where)]
    head = ("feature", "kind", "cols", "declared at")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    if observed is None:  # no sample: no columns to count
        out = [f"  {len(feats)} declared features:"]
        lines = [f"    {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[3]}" for r in [head, *rows]]
    else:
        out = [f"  {len(feats)} declared features (rows below); the sample's vectors have {len(observed)} columns",
               "  (cols: the columns a row became; a hashed or one-hot field, or a function, gives several):"]
        lines = [f"    {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in [head, *rows]]
    out += [line.rstrip() for line in lines]
    if "*" in cols:
        out.append(f"    (*: {shared} columns from the {cols.count('*')} functions together)")
    return out


def render_plan(plan: dict[str, Any]) -> str:
    pj, v, m = plan["project"], plan["view"], plan["models"]
    task = pj["task"]
    where = pj["directory"].strip("()")  # "(built-in)" is in parentheses already
    lines = [f"project {pj['name']} ({where}): task {task.get('kind')}"
             + (f", classes {task['classes']}" if task.get("classes") else "")]
    lines.append(f"feature view {v['name']} v{v['version']} (fingerprint {v['fingerprint']}); "
                 f"entity state at {plan['namespace']}")
    lines.extend(_feature_table(v))
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
