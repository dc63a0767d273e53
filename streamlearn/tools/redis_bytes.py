"""Redis bytes per event, in-process: the worker's loop on a real (embedded) Redis.

Feeds the bench's stream (``cards``, seed 7, labels in arrival order) to a
:class:`WorkerRuntime` as :mod:`streamlearn.tools.worker_harness` does (no broker; the
lifecycle on as the worker runs it, so drift may start challengers), takes a checkpoint at
the end (a worker takes one every few seconds: the learn log is bounded by that interval, not
by the served TTL), and reports Redis ``used_memory`` added per event, with where it went:
keys by kind (``srv``, ``ent``, ``lay``, ...), their mean ``MEMORY USAGE`` and value length,
the served records' lengths and how many models they carry, and ``MEMORY STATS``' hashtable
overheads. Keys use the default prefix (``sl:v1``), as in a deployment.

    python -m streamlearn.tools.redis_bytes --events 60000
    python -m streamlearn.tools.redis_bytes --events 60000 --json-out bytes.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

_SAMPLE = 5000  # keys per kind whose MEMORY USAGE and length are read


def _breakdown(r: Any, prefix: str) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    usage: Counter[str] = Counter()
    length: Counter[str] = Counter()
    srv_len: Counter[int] = Counter()
    skip = len(prefix.split(":"))
    for key in r.scan_iter(match=prefix + ":*", count=1000):
        parts = key.decode(errors="replace").split(":")
        kind = parts[skip] if len(parts) > skip else "?"
        if kind == "m" and len(parts) > skip + 2:  # per-model keys: by what they are (log, ckpt, ...)
            kind = "m:" + parts[skip + 2]
        kinds[kind] += 1
        if kinds[kind] <= _SAMPLE:
            usage[kind] += r.memory_usage(key, samples=0) or 0
            if r.type(key) == b"string":
                n = r.strlen(key)
                length[kind] += n
                if kind == "srv":
                    srv_len[n] += 1
    out: dict[str, Any] = {}
    for kind, count in kinds.most_common():
        s = min(count, _SAMPLE)
        out[kind] = {"keys": count, "memory_usage": round(usage[kind] / s, 1),
                     "value_len": round(length[kind] / s, 1)}
    return {"kinds": out, "served_lengths": dict(sorted(srv_len.items()))}


def _models_per_record(r: Any, prefix: str, limit: int = 2000) -> dict[int, int]:
    from streamlearn.streams.loop.served import ServedCodec

    c = ServedCodec()
    for key in r.scan_iter(match=prefix + ":lay:*", count=1000):
        address = bytes.fromhex(key.decode().rsplit(":", 1)[1])
        if len(address) == 8:
            c.learn_layout(address, r.get(key))
        else:  # a short address (4 bytes)
            c.learn_short(address, r.get(key), float("inf"))
    got: Counter[int] = Counter()
    for i, key in enumerate(r.scan_iter(match=prefix + ":srv:*", count=1000)):
        if i >= limit:
            break
        got[len(c.decode(r.get(key))["m"])] += 1
    return dict(sorted(got.items()))


def run(events: int = 60_000, window: int = 40, seed: int = 7, redis_url: str | None = None) -> dict[str, Any]:
    """One pass on a fresh worker and an empty Redis: ``used_memory`` added per event, and where."""
    from streamlearn.tools.bench import build_workload
    from streamlearn.tools.worker_harness import _drive, fresh_runtime

    with fresh_runtime(redis_url, "redis-bytes") as (rt, r):
        settings = rt.settings
        wl = build_workload(events, seed)
        before = r.info("memory")["used_memory"]

        async def drive() -> None:
            await _drive(rt, wl.wire, window)
            await rt.loop.checkpoint()

        asyncio.run(drive())
        after = r.info("memory")["used_memory"]
        info = r.info("server")
        st = r.memory_stats()
        db = st.get("db.0", {})
        return {
            "events": events, "labels_learned": rt.loop.counters.labels_learned,
            "server": f"{'valkey ' + info['valkey_version'] if 'valkey_version' in info else 'redis'}"
                      f" {info.get('redis_version')}",
            "bytes_per_event": round((after - before) / events, 1),
            "keys": r.dbsize(),
            "hashtable_overhead_per_key": round((db.get("overhead.hashtable.main", 0)
                                                 + db.get("overhead.hashtable.expires", 0)) / max(1, r.dbsize()), 1),
            **_breakdown(r, settings.redis_prefix),
            "models_per_record": _models_per_record(r, settings.redis_prefix),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--window", type=int, default=40, help="events per on_events batch")
    ap.add_argument("--redis-url", default=None, help="default: a private embedded Redis (it is flushed)")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    res = run(a.events, a.window, redis_url=a.redis_url)
    print(f"{res['server']}: {res['bytes_per_event']} B of used_memory per event ({res['events']:,} events, "
          f"{res['labels_learned']:,} labels learned, {res['keys']:,} keys, hashtable overhead "
          f"{res['hashtable_overhead_per_key']} B per key)")
    for kind, k in res["kinds"].items():
        print(f"  {kind:<10} {k['keys']:>8,} keys  MEMORY USAGE {k['memory_usage']:>9,.1f} B  "
              f"value {k['value_len']:>9,.1f} B")
    print(f"  served records by models: {res['models_per_record']}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
