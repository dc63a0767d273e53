"""Reading the archive: listed files only, verified, deduplicated, in the order a job needs.

Bad input never stops a read. A file that fails its checks (sha256, Avro container,
record count, unknown archive schema) is skipped with an :class:`ArchiveError` naming it;
a record whose value has a writer-schema fingerprint the registry does not know, or that
does not decode, is skipped and reported with its file and offset. Everything else loads.
``Archive.problems`` holds the reports; each is also logged once.

Orders offered:

* :meth:`Archive.partition_records` -- one partition in offset order (the order a live
  worker consumed it); records seen in more than one file are yielded once.
* :meth:`Archive.by_event_time` -- all partitions of a kind merged by record time
  (ties by partition, offset), with memory bounded by the files whose time ranges overlap
  the merge point (from the manifests), not by the archive.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from streamlearn.replay.archive.format import KINDS, MANIFEST_SUFFIX, SUBJECT, ArchiveError, Manifest, read_file
from streamlearn.replay.archive.storage import Storage, open_storage
from streamlearn.schemas import AvroCodec, InvalidRecord
from streamlearn.schemas.validation import Limits, check_label, decode_event, decode_feedback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    path: str  # the file, as a person can find it
    detail: str
    offset: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (offset {self.offset})" if self.offset is not None else self.path
        return f"{where}: {self.detail}"


class Archive:
    def __init__(self, storage: Storage, registry: AvroCodec | None = None,
                 limits: Limits | None = None) -> None:
        self.storage = storage
        self.registry = registry or AvroCodec.default()
        self.limits = limits or Limits()
        self.problems: list[Problem] = []
        self._reported: set[tuple[str, str, int | None]] = set()
        self._per_path: dict[str, int] = {}
        self.manifests: list[Manifest] = []
        self.orphans: list[str] = []  # data files without a manifest (never listed)
        self._load()

    @classmethod
    def open(cls, location: Any, **kwargs: Any) -> Archive:
        return cls(open_storage(location), **kwargs)

    # ------------------------------------------------------------------ listing
    def _problem(self, path: str, detail: str, offset: int | None = None) -> None:
        key = (path, detail, offset)
        if key in self._reported:
            return
        self._reported.add(key)
        p = Problem(path, detail, offset)
        self.problems.append(p)
        self._per_path[path] = self._per_path.get(path, 0) + 1
        if self._per_path[path] <= 20:  # a file full of bad records: the list has them all, the log the first
            log.error("archive: %s", p)

    def _load(self) -> None:
        names = self.storage.list()
        listed = set(names)
        for name in names:
            if name.endswith(".avro") and name + MANIFEST_SUFFIX not in listed:
                self.orphans.append(name)
            if not name.endswith(MANIFEST_SUFFIX):
                continue
            try:
                m = Manifest.from_json(self.storage.read(name))
            except (ValueError, TypeError) as exc:
                self._problem(self.storage.describe(name), f"unreadable manifest ({exc}); its file is skipped")
                continue
            if m.kind not in KINDS:
                self._problem(self.storage.describe(m.path), f"unknown record kind {m.kind!r}; skipped")
                continue
            if m.path not in listed:
                self._problem(self.storage.describe(m.path), "listed in a manifest but missing; skipped")
                continue
            unknown = sorted(fp for fp in m.writer_fingerprints
                             if fp not in ("json", "invalid") and self.registry.writer(bytes.fromhex(fp)) is None)
            if unknown:
                self._problem(self.storage.describe(m.path),
                              f"{sum(m.writer_fingerprints[f] for f in unknown)} record(s) written with schema "
                              f"fingerprint(s) {', '.join(unknown)} that this registry does not know; "
                              "those records are skipped, the rest of the file loads")
            self.manifests.append(m)
        self.manifests.sort(key=lambda m: (m.kind, m.topic, m.partition, m.first_offset, m.last_offset))

    def topics(self) -> list[tuple[str, str]]:
        """(kind, topic) of every listed file."""
        return sorted({(m.kind, m.topic) for m in self.manifests})

    def only_topics(self, topics: dict[str, str]) -> list[tuple[str, str]]:
        """Read only the files of ``topics`` (topic -> kind, as the archiver of one settings
        archives them) from now on; return the (kind, topic) of the others, left unread.

        Several deployments can archive into one directory: a job of one reads its own topics."""
        others = sorted({(m.kind, m.topic) for m in self.manifests if topics.get(m.topic) != m.kind})
        self.manifests = [m for m in self.manifests if topics.get(m.topic) == m.kind]
        return others

    def files(self, kind: str | None = None) -> list[Manifest]:
        return [m for m in self.manifests if kind is None or m.kind == kind]

    def partitions(self, kind: str) -> list[tuple[str, int]]:
        return sorted({(m.topic, m.partition) for m in self.files(kind)})

    def read(self, m: Manifest) -> list[dict[str, Any]]:
        """Records of one file, or [] with a problem naming it if the file is bad."""
        path = self.storage.describe(m.path)
        try:
            return read_file(self.storage.read(m.path), m)
        except ArchiveError as exc:
            self._problem(path, exc.detail)
        except OSError as exc:
            self._problem(path, f"cannot read: {exc}")
        return []

    # ------------------------------------------------------------------ orders
    def partition_records(self, kind: str, topic: str, partition: int) -> Iterator[dict[str, Any]]:
        nxt = -1
        for m in self.files(kind):
            if (m.topic, m.partition) != (topic, partition) or m.last_offset < nxt:
                continue
            for rec in self.read(m):
                if rec["offset"] >= nxt:  # overlapping files (two archivers in a rebalance): once
                    nxt = rec["offset"] + 1
                    rec["_file"] = m.path
                    yield rec

    def offset_order(self, kind: str) -> dict[tuple[str, int], Iterator[dict[str, Any]]]:
        return {tp: self.partition_records(kind, *tp) for tp in self.partitions(kind)}

    def by_event_time(self, kind: str, start: int | None = None, end: int | None = None
                      ) -> Iterator[dict[str, Any]]:
        """Records with a record time in [start, end), merged across partitions by record time.

        Files are loaded lazily in order of their first record time, so a record is yielded
        only when no unloaded file can hold an earlier one. Records without a record time
        (undecodable values) are skipped; their problems are reported when decoded.
        """
        files = [m for m in self.files(kind) if m.first_event_time is not None
                 and (end is None or m.first_event_time < end)
                 and (start is None or (m.last_event_time or 0) >= start)]
        files.sort(key=lambda m: (m.first_event_time, m.topic, m.partition, m.first_offset))
        covered: dict[tuple[str, int], list[tuple[int, int]]] = {}  # offset ranges already loaded
        heap: list[tuple[int, str, int, int, dict[str, Any]]] = []
        i = 0
        while i < len(files) or heap:
            while i < len(files) and (not heap or files[i].first_event_time <= heap[0][0]):
                m = files[i]
                i += 1
                ranges = covered.setdefault((m.topic, m.partition), [])
                overlaps = [r for r in ranges if r[0] <= m.last_offset and m.first_offset <= r[1]]
                records = self.read(m)
                if records:
                    ranges.append((m.first_offset, m.last_offset))
                for rec in records:
                    t, off = rec["record_time"], rec["offset"]
                    if any(a <= off <= b for a, b in overlaps):
                        continue  # already yielded from an overlapping file
                    if t is None:  # no time: the value did not decode when archived
                        rec["_file"] = m.path
                        self.decode(rec)  # reports an unknown schema with file and offset
                        continue
                    if (start is not None and t < start) or (end is not None and t >= end):
                        continue
                    rec["_file"] = m.path
                    heapq.heappush(heap, (t, rec["topic"], rec["partition"], off, rec))
            if heap:
                yield heapq.heappop(heap)[4]

    # ------------------------------------------------------------------ decoding
    def decode(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """The domain record (event, feedback, prediction) of an archived message, or None.

        Uses the same validation as the live worker, so what it dead-lettered is skipped
        here too; an unknown writer schema is reported as a problem naming the file.
        """
        kind = rec["kind"]
        try:
            if kind == "event":
                return decode_event(rec["value"], self.registry, self.limits)
            if kind == "feedback":
                return decode_feedback(rec["value"], self.registry, self.limits)
            return self.registry.decode(SUBJECT[kind], rec["value"] or b"")
        except InvalidRecord as err:
            if err.reason == "unknown_schema":
                self._problem(self.storage.describe(rec.get("_file", "?")), err.detail + "; record skipped",
                              rec["offset"])
            return None

    def decoded(self, records: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(archived record, domain record) for the records that decode."""
        for rec in records:
            value = self.decode(rec)
            if value is not None:
                yield rec, value


def read_own_topics(archive: Archive, settings: Any, where: str, say: Callable[[str], None] = log.info) -> None:
    """Restrict ``archive`` to the topics ``settings`` archives (several deployments can archive
    into one directory: a job of one reads its own) and ``say`` which other topics it holds,
    left unread, in one line; ValueError naming the topics found when none of its own is there
    (``where``: the archive, for the message)."""
    from streamlearn.replay.archive.archiver import archived_topics

    topics = archived_topics(settings)
    found = sorted({t for _, t in archive.topics()})
    others = sorted({t for _, t in archive.only_topics(topics)})
    if not archive.manifests:
        raise ValueError(f"the archive at {where} holds none of the topics of the settings in use "
                         f"({', '.join(topics)}); it holds {', '.join(found) or 'no topics'}")
    if others:
        say(f"archive also holds topics {', '.join(others)} of other settings: not read")


def worker_labels(pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]], task: Any, refused: Counter
                  ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The decoded feedback the live worker learns: its own label check
    (:func:`~streamlearn.schemas.validation.check_label` with ``task``) applied; a label it
    dead-letters is skipped and counted in ``refused`` by reason. The feedback topic holds
    what producers sent, refused labels included."""
    for rec, fb in pairs:
        try:
            yield rec, check_label(fb, task)
        except InvalidRecord as err:
            refused[err.detail] += 1


def refused_note(refused: Counter, total: int | None = None) -> str | None:
    """One line for a report: how many labels were skipped as the worker refuses them, and why
    (``total``: when ``refused`` holds only the commonest reasons)."""
    n = sum(refused.values()) if total is None else total
    if not n:
        return None
    reasons = "; ".join(f"{r} ({c}x)" if c > 1 else r for r, c in refused.most_common(3))
    more = f"; {len(refused) - 3} more reason(s)" if len(refused) > 3 else ""
    return f"skipped {n} label(s) the worker refuses (dead-lettered live): {reasons}{more}"
