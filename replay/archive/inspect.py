"""What an archive holds: per topic/partition time ranges, counts, offset gaps, problems.

``streamlearn replay inspect --archive DIR [--verify]``. A *gap* is a range of offsets no
listed file covers between the first and last archived offset of a partition: records
the archive does not have (a file deleted by hand, or Kafka offsets that never held a
record, e.g. transaction markers). With ``--verify`` every file is read and checked
against its manifest's sha256 and record count.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from streamlearn.formats import iso
from streamlearn.replay.archive.reader import Archive


def summarize(archive: Archive, verify: bool = False) -> dict[str, Any]:
    groups: dict[tuple[str, str, int], list] = defaultdict(list)
    for m in archive.files():
        groups[(m.kind, m.topic, m.partition)].append(m)
    parts = []
    for (kind, topic, partition), files in sorted(groups.items()):
        files.sort(key=lambda m: (m.first_offset, m.last_offset))
        gaps, overlaps = [], []
        covered = files[0].last_offset
        for m in files[1:]:
            if m.first_offset > covered + 1:
                gaps.append([covered + 1, m.first_offset - 1])
            elif m.first_offset <= covered:
                overlaps.append([m.first_offset, min(covered, m.last_offset)])
            covered = max(covered, m.last_offset)
        times = [t for m in files for t in (m.first_event_time, m.last_event_time) if t is not None]
        part = {
            "kind": kind, "topic": topic, "partition": partition, "files": len(files),
            "records": sum(m.record_count for m in files), "bytes": sum(m.bytes for m in files),
            "first_offset": files[0].first_offset, "last_offset": covered,
            "first_event_time": min(times) if times else None, "last_event_time": max(times) if times else None,
            "first_timestamp": min(m.first_timestamp for m in files),
            "last_timestamp": max(m.last_timestamp for m in files),
            "gaps": gaps, "missing_offsets": sum(b - a + 1 for a, b in gaps), "overlaps": overlaps,
        }
        if verify:
            part["verified_records"] = sum(len(archive.read(m)) for m in files)
        parts.append(part)
    staging = sorted(p.name for p in archive.storage.staging_dir().glob("*.part"))
    return {"partitions": parts, "problems": [str(p) for p in archive.problems],
            "unlisted_files": archive.orphans, "unfinished_staging_files": staging}


def format_summary(s: dict[str, Any]) -> str:
    lines = []
    # whole topic names: several deployments can share an archive, and the names tell them apart
    tw = max([34, *(len(p["topic"]) for p in s["partitions"])])
    header = f"{'kind':<10} {'topic':<{tw}} {'p':>2} {'files':>5} {'records':>9} {'offsets':>17} " \
             f"{'event time range (UTC)':<51} gaps"
    lines.append(header)
    for p in s["partitions"]:
        gaps = f"{len(p['gaps'])} ({p['missing_offsets']} offsets)" if p["gaps"] else "none"
        lines.append(
            f"{p['kind']:<10} {p['topic']:<{tw}} {p['partition']:>2} {p['files']:>5} {p['records']:>9} "
            f"{p['first_offset']:>8}-{p['last_offset']:<8} "
            f"{iso(p['first_event_time']):<24} .. {iso(p['last_event_time']):<24} {gaps}")
        for a, b in p["gaps"][:5]:
            lines.append(f"{'':>14}missing offsets {a}..{b}")
    if not s["partitions"]:
        lines.append("(empty archive)")
    for f in s["unfinished_staging_files"]:
        lines.append(f"unfinished (not listed, removed on the archiver's next start): {f}")
    for f in s["unlisted_files"]:
        lines.append(f"published without a manifest (not listed): {f}")
    for p in s["problems"]:
        lines.append(f"PROBLEM: {p}")
    return "\n".join(lines)
