"""``streamlearn produce``, ``feedback`` and ``tail``: the SDK from the command line.

Input files are JSON lines (one wire-format JSON object per line, exactly what ``kcat -P``
would send) or CSV with a header row:

* events: columns ``event_id``, ``entity``, ``event_time``; every other column is a feature.
* labels: columns ``event_id``, ``label`` and optionally ``label_time``.

CSV cells are typed by their text: empty is null, ``true``/``false`` (any case) are
booleans, integers and decimals (``12``, ``-3.5``, ``1e3``; not ``007``, which stays a
string) are numbers, anything else is a string. Times (``event_time``, ``label_time``) are
ms since the epoch or ISO-8601 (naive = UTC). A label without ``label_time`` is stamped
with the time it is sent, in either format.

>>> parse_cell("12"), parse_cell("-3.5"), parse_cell("007"), parse_cell("TRUE"), parse_cell("")
(12, -3.5, '007', True, None)
>>> csv_record("event", {"event_id": "e1", "entity": "card-7", "event_time": "2023-11-14T22:13:20Z",
...                      "amount": "12.5", "category": "fuel"})
{'event_id': 'e1', 'entity': 'card-7', 'event_time': 1700000000000, 'features': {'amount': 12.5, 'category': 'fuel'}}
>>> import io
>>> rows = list(read_rows(io.StringIO('{"event_id": "e1"}\\n\\nnot json\\n'), "jsonl", "event"))
>>> [(line, type(r).__name__) for line, r in rows]
[(1, 'dict'), (3, 'InvalidRecord')]
>>> parse_rate("200/s"), parse_rate(None)
(200.0, None)
>>> record_key({"entity": "card-7", "features": {"merchant": "m1"}}, "merchant")
'm1'
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import typer

from streamlearn import formats
from streamlearn.formats import jsonable
from streamlearn.schemas import InvalidRecord

_INT = re.compile(r"[+-]?(?:0|[1-9]\d*)")
_FLOAT = re.compile(r"[+-]?(?:(?:0|[1-9]\d*)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
CSV_FIELDS = {"event": ("event_id", "entity", "event_time"), "feedback": ("event_id", "label", "label_time")}
TIME_FIELD = {"event": "event_time", "feedback": "label_time"}
DEFAULT_KEY = {"event": "entity", "feedback": "event_id"}

# tail: kind -> (settings field naming the topic, schema subject). A new topic is one line.
TAIL_SOURCES: dict[str, tuple[str, str]] = {
    "predictions": ("topic_predictions", "prediction"),
    "shadow": ("topic_shadow", "prediction"),
    "dead-letters": ("topic_deadletter", "deadletter"),
    "drift": ("topic_drift", "drift"),
    "lifecycle": ("topic_lifecycle", "lifecycle"),
}

EXIT_INVALID, EXIT_USAGE, EXIT_DELIVERY = 1, 2, 3


# ------------------------------------------------------------------ parsing (pure)
def parse_cell(text: str) -> Any:
    """A CSV cell's value: null, boolean, int, float or string (see the module doc)."""
    if text == "":
        return None
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def parse_time(value: Any) -> Any:
    """A cell's time: ms, or an ISO-8601 string (naive = UTC) -> ms; anything else unchanged
    (the schema check then names the field)."""
    if isinstance(value, str):
        try:
            return formats.parse_time(value)
        except ValueError:
            return value
    return value


def parse_rate(text: str | None) -> float | None:
    """``"200"`` or ``"200/s"`` -> 200.0 records per second; None means as fast as possible."""
    if text is None:
        return None
    try:
        rate = float(text.removesuffix("/s"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a rate like 200 or 200/s") from None
    if not rate > 0 or not math.isfinite(rate):
        raise typer.BadParameter(f"rate must be positive, got {text!r}")
    return rate


def csv_record(kind: str, row: dict[str, str]) -> dict[str, Any]:
    """A CSV row (column -> text) as an event or a label record."""
    if kind == "feedback":
        rec = {k: parse_cell(v) for k, v in row.items()}
        rec["event_id"] = row.get("event_id", "")  # ids stay text: "007" is not 7
    else:
        reserved = CSV_FIELDS["event"]
        rec = {"event_id": row.get("event_id", ""), "entity": row.get("entity", ""),
               "event_time": parse_cell(row.get("event_time", "")),
               "features": {k: parse_cell(v) for k, v in row.items() if k not in reserved}}
    tf = TIME_FIELD[kind]
    if tf in rec:
        rec[tf] = parse_time(rec[tf])
    return rec


def read_rows(stream: TextIO, fmt: str, kind: str) -> Iterator[tuple[int, dict[str, Any] | InvalidRecord]]:
    """(line number, record or InvalidRecord) for every non-blank row; nothing is skipped silently."""
    if fmt == "jsonl":
        for line_no, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                yield line_no, InvalidRecord("invalid_json", str(exc))
                continue
            if not isinstance(rec, dict):
                yield line_no, InvalidRecord("schema", f"expected a JSON object, got {type(rec).__name__}")
                continue
            yield line_no, rec
        return
    reader = csv.DictReader(stream)
    header = reader.fieldnames or []
    required = CSV_FIELDS[kind][:2] if kind == "feedback" else CSV_FIELDS[kind]
    missing = [c for c in required if c not in header]
    if missing:
        raise typer.BadParameter(f"CSV header {header} lacks column(s) {missing}")
    for row in reader:
        if None in row:  # more cells than header columns
            yield reader.line_num, InvalidRecord("schema", f"{len(row[None])} cell(s) beyond the header")
            continue
        if all(v in ("", None) for v in row.values()):
            continue
        if any(v is None for v in row.values()):
            yield reader.line_num, InvalidRecord("schema", "fewer cells than header columns")
            continue
        yield reader.line_num, csv_record(kind, row)


def guess_format(path: str, fmt: str, first: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "jsonl" if first.lstrip().startswith("{") else "csv"


def record_key(rec: dict[str, Any], field: str) -> str:
    """The Kafka key: a top-level field or a feature; a missing key invalidates the row."""
    value = rec.get(field)
    if value is None and isinstance(rec.get("features"), dict):
        value = rec["features"].get(field)
    if value is None or value == "":
        raise InvalidRecord("schema", f"key field '{field}' is missing or empty")
    return str(value)


# ------------------------------------------------------------------ sending
def _open_input(source: str) -> TextIO:
    if source == "-":
        return sys.stdin
    path = Path(source)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {source}")
    return path.open(newline="", encoding="utf-8")


def _generated(kind: str, dataset: str, n: int, seed: int) -> tuple[int | None, Iterator[tuple[int, Any]]]:
    from streamlearn import datasets

    if dataset not in datasets.DATASETS:
        raise typer.BadParameter(f"unknown scenario {dataset!r}; known: {sorted(datasets.DATASETS)}")
    items = datasets.load(dataset, n, seed)
    if kind == "event":
        return len(items), ((i, it.event) for i, it in enumerate(items, 1))
    # labels in the order the world sends them; labels that never arrive are part of the scenario
    labels = sorted((it.feedback for it in items if it.feedback is not None), key=lambda f: f["label_time"])
    return len(labels), ((i, fb) for i, fb in enumerate(labels, 1))


def _file_rows(source: str, fmt: str, kind: str) -> tuple[int | None, Iterator[tuple[int, Any]], TextIO]:
    stream = _open_input(source)
    total = None
    if stream is not sys.stdin:
        total = sum(1 for line in stream if line.strip())
        stream.seek(0)
        first = stream.readline()
        stream.seek(0)
    else:
        first = stream.buffer.peek(256)[:256].decode("utf-8", "replace") if hasattr(stream, "buffer") else ""
    fmt = guess_format(source, fmt, first)
    if fmt == "csv" and total:
        total -= 1  # the header
    return total, read_rows(stream, fmt, kind), stream


def label_check(settings: Any) -> Callable[[dict[str, Any]], None]:
    """What the feedback producer checks before it sends (:func:`~streamlearn.sdk.producers.encode_feedback`):
    schema and limits as the worker decodes the label, then the worker's own check against the
    task of these settings (reason ``label`` for a label it would dead-letter)."""
    from streamlearn.schemas import AvroCodec
    from streamlearn.schemas.validation import Limits
    from streamlearn.sdk.producers import encode_feedback, label_task

    task, codec, limits = label_task(settings), AvroCodec.default(), Limits.from_settings(settings)

    def check(rec: dict[str, Any]) -> None:
        encode_feedback(rec, limits, codec, task)

    return check


def event_check(settings: Any) -> Callable[[dict[str, Any]], None]:
    """What the event producer checks before it sends (schema, limits, as the worker decodes it),
    without a producer: raises InvalidRecord naming the field."""
    from streamlearn.schemas import AvroCodec
    from streamlearn.schemas.validation import Limits
    from streamlearn.sdk.producers import encode_event

    codec, limits = AvroCodec.default(), Limits.from_settings(settings)

    def check(rec: dict[str, Any]) -> None:
        encode_event(rec, limits, codec)

    return check


def stamped(kind: str, rec: dict[str, Any]) -> dict[str, Any]:
    """A label without ``label_time`` gets the time it is sent (see the module doc)."""
    if kind == "feedback" and rec.get("label_time") is None:
        return {**rec, "label_time": int(time.time() * 1000)}
    return rec


def invalid_rows(rows: Iterable[tuple[int, Any]], kind: str, check: Callable[[dict[str, Any]], None],
                 key: str | None) -> list[tuple[int, InvalidRecord]]:
    """(line, why) of every row that would not be sent: unreadable, refused by ``check``, or
    without its key field. Sends nothing: the check before a file is sent."""
    bad = []
    for line_no, rec in rows:
        try:
            if isinstance(rec, InvalidRecord):
                raise rec
            rec = stamped(kind, rec)
            check(rec)
            if key is not None:
                record_key(rec, key)
        except InvalidRecord as exc:
            bad.append((line_no, exc))
    return bad


def refusal(what: str, bad: list[tuple[int, InvalidRecord]], noun: str) -> str:
    """One line: the first invalid row (file, line, reason, detail), how many more, and that nothing was sent."""
    from streamlearn.cli.errors import one_line

    line_no, exc = bad[0]
    more = ""
    if len(bad) > 1:
        rest = [str(n) for n, _ in bad[1:21]]
        more = f"; {len(bad) - 1} more invalid line(s): {', '.join(rest)}{' ...' if len(bad) > 21 else ''}"
    return (f"{what}: line {line_no}: {exc.reason}: {one_line(exc.detail)}{more}; nothing was sent "
            f"(--skip-invalid sends the valid {noun} and reports the others)")


def send_rows(kind: str, source: str | None, generate: str | None, events: int, seed: int, fmt: str,
              rate: float | None, key: str | None, fail_fast: bool, topic: str | None,
              verbose: bool = False) -> int:
    """Shared body of ``produce`` and ``feedback``; returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streamlearn.cli.kafka import check_broker, quiet_config
    from streamlearn.sdk import Delivery, EventProducer, FeedbackProducer
    from streamlearn.settings import get_settings

    if (source is None) == (generate is None):
        raise typer.BadParameter("give exactly one of --input FILE|- and --generate SCENARIO")
    err = Console(stderr=True)
    stream = None
    noun = "events" if kind == "event" else "labels"
    key_field = key or DEFAULT_KEY[kind]
    settings = get_settings()
    if generate is not None:
        total, gen = _generated(kind, generate, events, seed)
        generated = list(gen)
        rows = iter(generated)
        what = f"{generate} (seed {seed})"
    else:
        what = "stdin" if source == "-" else source
    if fail_fast and source != "-":
        # a file or a generated stream: every line is checked before anything is sent, so a
        # refused input leaves nothing half-sent. stdin is a stream: checked line by line below.
        kf = key_field if key else None
        # the producer's own checks, without a producer (it runs them again as it sends)
        pre_check = label_check(settings) if kind == "feedback" else event_check(settings)
        if generate is not None:
            bad = invalid_rows(generated, kind, pre_check, kf)
        else:
            _, pre, pre_stream = _file_rows(source, fmt, kind)
            try:
                bad = invalid_rows(pre, kind, pre_check, kf)
            finally:
                pre_stream.close()
        if bad:
            from streamlearn.cli.errors import EXIT_CONFIG, CliError

            raise CliError(refusal(what, bad, noun), code=EXIT_CONFIG)
    if generate is None:
        total, rows, stream = _file_rows(source, fmt, kind)
    failures: list[Delivery] = []

    def on_delivery(d: Delivery) -> None:
        if not d.ok:
            failures.append(d)
            if len(failures) <= 10:
                err.print(f"[red]delivery failed[/] {d.event_id}: {d.error}")

    cls = EventProducer if kind == "event" else FeedbackProducer
    check_broker(settings, verbose)  # one clear line within seconds instead of a 30 s flush
    producer = cls(settings, topic=topic, on_delivery=on_delivery, **quiet_config(verbose))
    invalid: list[int] = []
    sent = 0
    stopped_at: int | None = None
    start = time.monotonic()
    try:
        with Progress(TextColumn(f"{noun} → {producer.topic}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=False) as progress:
            task = progress.add_task(noun, total=total)
            for line_no, rec in rows:
                try:
                    if isinstance(rec, InvalidRecord):
                        raise rec
                    rec = stamped(kind, rec)
                    if key is None:  # the producer keys by entity / event id itself
                        producer.send_record(rec)
                    else:  # schema errors first: they say more than a missing key
                        producer.encode(rec)
                        producer.send_record(rec, record_key(rec, key_field))
                    sent += 1
                except InvalidRecord as exc:
                    invalid.append(line_no)
                    progress.console.print(f"[yellow]line {line_no}[/]: {exc.reason}: {exc.detail}")
                    if fail_fast:
                        stopped_at = line_no
                        break
                progress.advance(task)
                if rate:  # pace against the start, so slow sends catch up
                    ahead = (sent + len(invalid)) / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
    finally:
        producer.close()  # flushes; failed deliveries were reported by on_delivery
        if stream is not None and stream is not sys.stdin:
            stream.close()
    secs = time.monotonic() - start
    typer.echo(f"{what}: sent {sent} {noun} to {producer.topic}: {producer.delivered} delivered, "
               f"{producer.failed} failed, in {secs:.1f} s ({sent / max(secs, 1e-9):,.0f}/s)")
    if invalid:
        shown = ", ".join(map(str, invalid[:50])) + (" ..." if len(invalid) > 50 else "")
        verb = "stopped at" if stopped_at is not None else "skipped"
        typer.echo(f"{verb} {len(invalid)} invalid row(s), line(s) {shown}")
    if stopped_at is not None:
        typer.echo(f"fail-fast: nothing after line {stopped_at} was read; --skip-invalid to go on")
        return EXIT_INVALID
    return EXIT_DELIVERY if producer.failed else 0


# ------------------------------------------------------------------ tail
class TailUnavailable(ValueError):
    pass


def resolve_tail_source(settings: Any, kind: str, sources: dict[str, tuple[str, str]] | None = None,
                        codec: Any = None) -> tuple[str, str]:
    """(topic, subject) for a tail kind, or a clear error if this install does not have it."""
    from streamlearn.schemas import AvroCodec

    sources = TAIL_SOURCES if sources is None else sources
    kind = tail_kind(kind, sources)
    if kind not in sources:
        raise TailUnavailable(f"unknown kind {kind!r}; one of: {', '.join(sources)}")
    setting, subject = sources[kind]
    topic = getattr(settings, setting, None)
    if not topic:
        raise TailUnavailable(f"'{kind}' is not available: there is no '{setting}' setting in this version")
    reg = codec or AvroCodec.default()
    if subject not in reg.subjects():
        raise TailUnavailable(f"'{kind}' is not available: no '{subject}' schema in this version "
                              f"(known: {', '.join(reg.subjects())})")
    return topic, subject


def tail_kind(kind: str, sources: dict[str, Any] | None = None) -> str:
    """A tail kind, singular or plural, ``_`` or ``-``: its name in ``sources`` (else unchanged).

    >>> tail_kind("prediction"), tail_kind("dead_letter"), tail_kind("deadletters"), tail_kind("drifts")
    ('predictions', 'dead-letters', 'dead-letters', 'drift')
    """
    sources = TAIL_SOURCES if sources is None else sources
    want = kind.strip().lower().replace("_", "-")
    for name in sources:
        n = name.replace("-", "")
        if want.replace("-", "") in (n, n + "s", n.removesuffix("s")):
            return name
    return kind


def _iso(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ms)


def _short(value: Any, n: int = 80) -> str:
    text = repr(value) if isinstance(value, bytes) else str(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def format_human(subject: str, rec: dict[str, Any]) -> str:
    """One readable line per record; unknown subjects print as key=value pairs."""
    r = rec
    if subject == "prediction":
        return (f"{_iso(r['event_time'])}  {r['event_id']}  entity={r['entity']}  score={r['score']:.4f}  "
                f"predicted={r['predicted']}  model={r['model_name']}@v{r['model_version']}  "
                f"labels_learned={r['labels_learned']}  latency={r['latency_ms']:.1f}ms")
    if subject == "deadletter":
        return (f"{_iso(r['failed_at'])}  {r['reason']}  {r['source_topic']}[{r['partition']}]@{r['offset']}  "
                f"{_short(r['detail'], 120)}  key={_short(r['key'], 40)}  raw={_short(r['raw'])}")
    if subject == "drift":
        feat = f" feature={r['feature']}" if r.get("feature") else ""
        return (f"{_iso(r['at'])}  {r['severity']}  {r['detector']}{feat}  statistic={r['statistic']:.4g}  "
                f"position={r['position']}  action={r['action']}  model={r['model_name']}@v{r['version']}")
    if subject == "lifecycle":
        details = " ".join(f"{k}={_short(v, 40)}" for k, v in sorted(r.get("details", {}).items()))
        return (f"{_iso(r['at'])}  {r['action']}  model={r['model_name']}@v{r['version']}  "
                f"champion=v{r['champion']}  {r['reason']}" + (f"  {details}" if details else ""))
    return "  ".join(f"{k}={_short(v)}" for k, v in rec.items())


def _write(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()  # a pipe reader sees each record as it arrives


def tail_records(kind: str, json_out: bool, from_beginning: bool, since: str | None, max_records: int | None,
                 timeout: float | None, group: str | None, dedupe: bool, verbose: bool = False) -> int:
    from streamlearn.cli.kafka import check_broker, group_has_commits, quiet_config
    from streamlearn.sdk import InvalidMessage, RecordConsumer
    from streamlearn.settings import get_settings
    from streamlearn.streams.gapguard import OffsetGapError

    settings = get_settings()
    try:
        topic, subject = resolve_tail_source(settings, kind)
    except TailUnavailable as exc:
        typer.echo(f"streamlearn: {exc}", err=True)
        return EXIT_USAGE
    from_ts = None
    if since is not None:
        from_ts = parse_time(parse_cell(since))
        if not isinstance(from_ts, int):
            raise typer.BadParameter(f"--from {since!r}: give ms since the epoch or an ISO-8601 time")

    def on_invalid(bad: InvalidMessage) -> None:  # reported, never silently skipped
        typer.echo(f"warning: undecodable record {bad}", err=True)

    dedupe_key = None
    if dedupe:
        if subject != "prediction":
            raise typer.BadParameter("--dedupe applies to predictions and shadow")
        dedupe_key = ((lambda r: (r["event_id"], r["model_version"])) if topic == settings.topic_shadow
                      else (lambda r: r["event_id"]))
    check_broker(settings, verbose)  # one clear line within seconds, not a traceback
    # a group resumes from its committed offsets (a time given with --from still wins)
    resumes = group is not None and from_ts is None and group_has_commits(settings, group, topic, verbose)
    try:
        consumer = RecordConsumer(settings, topic, subject, group_id=group, from_beginning=from_beginning,
                                  from_timestamp=from_ts, dedupe_key=dedupe_key, on_invalid=on_invalid,
                                  **quiet_config(verbose))
    except ValueError as exc:
        typer.echo(f"streamlearn: {exc}", err=True)
        return EXIT_USAGE
    if resumes:
        start = f"group {group}'s committed offsets"
    else:
        start = "the beginning" if from_beginning else (f"{_iso(from_ts)}" if from_ts is not None else "the end")
        if group is not None and from_ts is None:
            start += f" (group {group} has no committed offsets)"
    typer.echo(f"following {topic} ({subject}) from {start}; Ctrl-C to stop", err=True)
    n = 0
    try:
        with consumer:
            for rec in consumer.iter(idle_timeout=timeout, max_items=max_records):
                line = (json.dumps(jsonable(rec.value), separators=(",", ":")) if json_out
                        else format_human(subject, rec.value))
                _write([line])
                n += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the reader went away (| head): not an error
        sys.stderr.close()
        return 0
    except OffsetGapError as exc:  # records the broker skipped never came: say so, never skip them
        typer.echo(f"error after {n} record(s): {exc}", err=True)
        return EXIT_DELIVERY
    typer.echo(f"{n} record(s)", err=True)
    return 0


# ------------------------------------------------------------------ commands
FORMAT_HELP = "jsonl or csv; auto: by extension, else by the first character"


INPUT_HELP = "FILE.jsonl, FILE.csv or - for stdin (--from FILE: deprecated spelling)"
VERBOSE_OPT = typer.Option(False, "--verbose", "-v", help="show the Kafka client's own log lines")


def produce(
    source: str | None = typer.Option(None, "--input", "-i", help=INPUT_HELP),
    generate: str | None = typer.Option(None, help="send a generated scenario instead: cards or phishing"),
    events: int = typer.Option(10_000, help="events to generate (with --generate)"),
    seed: int = typer.Option(7, help="generator seed (feedback --generate with the same seed matches)"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    rate: str | None = typer.Option(None, help="events per second, e.g. 200 or 200/s; default: as fast as possible"),
    key: str | None = typer.Option(None, help="field (or feature) used as the Kafka key; default: entity"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid/--fail-fast",
        help="send the valid events and report the invalid ones by line, or (default) refuse the whole "
             "file if one line is invalid, before anything is sent (stdin: stop at the first)"),
    topic: str | None = typer.Option(None, help="override the events topic"),
    verbose: bool = VERBOSE_OPT,
) -> None:
    """Send events from a JSONL/CSV file, stdin, or a generated scenario; invalid rows are reported by line.

    Every event is checked as the worker will decode it (schema, limits). A file (or --generate)
    is checked whole before anything is sent: one invalid line refuses it (exit 2, naming the
    file, line and reason) unless --skip-invalid. stdin is checked line by line as it is sent."""
    raise typer.Exit(send_rows("event", source, generate, events, seed, _fmt(fmt), parse_rate(rate), key,
                               not skip_invalid, topic, verbose))


def feedback(
    source: str | None = typer.Option(None, "--input", "-i", help=INPUT_HELP),
    generate: str | None = typer.Option(None, help="send the labels of a generated scenario: cards or phishing"),
    events: int = typer.Option(10_000, help="events of the generated scenario (with --generate)"),
    seed: int = typer.Option(7, help="generator seed: the same as for produce --generate"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    rate: str | None = typer.Option(None, help="labels per second, e.g. 200 or 200/s"),
    key: str | None = typer.Option(None, help="field used as the Kafka key; default: event_id"),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid/--fail-fast",
        help="send the valid labels and report the invalid ones by line, or (default) refuse the whole "
             "file if one line is invalid, before anything is sent (stdin: stop at the first)"),
    topic: str | None = typer.Option(None, help="override the feedback topic"),
    verbose: bool = VERBOSE_OPT,
) -> None:
    """Send labels (event_id, label, label_time) from a JSONL/CSV file, stdin, or a generated scenario.

    Every label is checked as the worker checks it, against the project's task: a class not in
    the project's classes, a non-number for regression, anything but a bool or 0/1 for binary would
    be dead-lettered (reason 'label'), so it is refused here. A file (or --generate) is checked
    whole before anything is sent: one invalid line refuses it (exit 2, naming the file, line
    and reason) unless --skip-invalid. stdin is checked line by line as it is sent."""
    raise typer.Exit(send_rows("feedback", source, generate, events, seed, _fmt(fmt), parse_rate(rate), key,
                               not skip_invalid, topic, verbose))


def tail(
    kind: str = typer.Argument(..., help=" | ".join(TAIL_SOURCES) + " (singular or plural)"),
    json_out: bool = typer.Option(False, "--json", help="JSON lines (bytes fields base64) instead of text"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="start at the first record"),
    since: str | None = typer.Option(None, "--from",
                                     help="start at this Kafka record timestamp (not event time): ms since the "
                                          "epoch or ISO-8601 (--since: deprecated)"),
    max_records: int | None = typer.Option(None, "--max", help="stop after N records"),
    timeout: float | None = typer.Option(None, help="stop after S seconds without a new record"),
    group: str | None = typer.Option(None, help="consume in this consumer group (commits offsets)"),
    dedupe: bool = typer.Option(False, help="predictions: drop repeated event ids (at-least-once delivery)"),
    verbose: bool = VERBOSE_OPT,
) -> None:
    """Print a topic as it grows: predictions, shadow, dead-letters, drift, lifecycle."""
    if from_beginning and since is not None:
        raise typer.BadParameter("--from-beginning and --from are exclusive")
    raise typer.Exit(tail_records(kind, json_out, from_beginning, since, max_records, timeout, group, dedupe,
                                  verbose))


def _fmt(fmt: str) -> str:
    if fmt not in ("auto", "jsonl", "csv"):
        raise typer.BadParameter(f"--format must be auto, jsonl or csv, not {fmt!r}")
    return fmt


def register(app: typer.Typer) -> None:
    app.command()(produce)
    app.command()(feedback)
    app.command()(tail)
