"""The worker's consumer without a broker (streams/consumer.py): labels held back behind their events
under a backlog (``Holdback``), and rebalance callbacks that fail end the process."""

from __future__ import annotations

from dataclasses import dataclass

from streamlearn.streams.consumer import Holdback


@dataclass
class Rec:
    offset: int
    timestamp: int


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def offsets(released: dict) -> list[int]:
    return [r.offset for recs in released.values() for r in recs]


def test_labels_ahead_of_the_events_wait_while_the_events_have_a_backlog():
    clock = Clock()
    hold = Holdback(max_hold_s=5.0, clock=clock)
    hold.add("fb", [Rec(0, 1_000), Rec(1, 2_000), Rec(2, 3_000), Rec(3, 2_500)])
    assert hold.release(lead_behind=True, limit=100) == {}, "no event seen yet: every label is ahead"
    hold.note_lead([Rec(0, 900), Rec(1, 2_100)])
    assert offsets(hold.release(lead_behind=True, limit=100)) == [0, 1]
    # offset order is kept: 3 (t=2,500) waits behind 2 (t=3,000), so commits stay contiguous
    hold.note_lead([Rec(2, 2_600)])
    assert hold.release(lead_behind=True, limit=100) == {}
    assert len(hold) == 2


def test_without_a_backlog_nothing_is_held_and_the_limit_bounds_a_batch():
    hold = Holdback(clock=Clock())
    hold.add("fb", [Rec(i, 10_000 + i) for i in range(7)])
    first = hold.release(lead_behind=False, limit=5)
    assert offsets(first) == [0, 1, 2, 3, 4] and len(hold) == 2
    assert offsets(hold.release(lead_behind=False, limit=5)) == [5, 6] and len(hold) == 0


def test_a_label_is_never_held_longer_than_max_hold_so_learning_goes_on_when_events_stall():
    clock = Clock()
    hold = Holdback(max_hold_s=5.0, clock=clock)
    hold.add("fb", [Rec(0, 50_000)])
    clock.t += 4.9
    hold.note_lead([Rec(0, 40_000)])  # events still come, but have not reached the labels
    hold.add("fb", [Rec(1, 60_000)])
    assert hold.release(lead_behind=True, limit=10) == {}
    clock.t += 0.2  # the first has waited 5.1 s, the second 0.2 s
    assert offsets(hold.release(lead_behind=True, limit=10)) == [0]
    hold.drop(["fb"])  # revoked: the next owner reads them from the committed offset
    assert len(hold) == 0


def test_nothing_is_held_while_the_events_have_stalled():
    """A partition the broker stopped serving must not stop learning for good."""
    clock = Clock()
    hold = Holdback(max_hold_s=5.0, clock=clock)
    hold.note_lead([Rec(0, 1_000)])
    clock.t += 6.0  # no events for 6 s, though the broker says there are more
    hold.add("fb", [Rec(0, 9_000), Rec(1, 9_500)])
    assert offsets(hold.release(lead_behind=True, limit=10)) == [0, 1]


def test_a_rebalance_callback_that_raises_ends_the_process(monkeypatch):
    """aiokafka logs a listener's exception and carries on; the worker must not (exit 70)."""
    import asyncio

    from streamlearn.settings import Settings
    from streamlearn.streams import consumer as consumer_module

    ended = []
    monkeypatch.setattr(consumer_module, "fatal", lambda what, exc: ended.append((what, repr(exc))))

    async def assigned(tps) -> None:
        raise RuntimeError("restore failed")

    async def nothing() -> None:
        pass

    intake = consumer_module.BatchConsumer(Settings(), {"ev": nothing}, on_assigned=assigned, on_revoked=nothing,
                                           deliver=nothing)
    asyncio.run(intake.on_partitions_assigned([]))
    assert ended == [("partition assignment", "RuntimeError('restore failed')")]
    assert not intake.group.joined


def test_fetched_records_become_the_kafka_records_the_constructor_makes() -> None:
    """The consumer builds each KafkaRecord without the frozen dataclass's per-field
    setattr: the same record as the constructor (equal, same hash and repr, every field set
    in the dataclass's order), for every field the dataclass has."""
    import dataclasses

    from aiokafka.structs import ConsumerRecord

    from streamlearn.schemas.records import KafkaRecord
    from streamlearn.streams.consumer import _kafka_records

    fetched = [ConsumerRecord("fb", 3, 17 + i, 1_700_000_000_000 + i, 0, key, value, None, 1, 5, ())
               for i, (key, value) in enumerate([(b"k", b"v"), (None, b""), (b"x" * 40, None)])]
    got: list[KafkaRecord] = []
    _kafka_records(fetched, got)
    want = [KafkaRecord("", r.topic, r.partition, r.offset, r.timestamp, key=r.key, value=r.value) for r in fetched]
    assert got == want and [hash(r) for r in got] == [hash(r) for r in want]
    assert [repr(r) for r in got] == [repr(r) for r in want]
    assert [list(vars(r).items()) for r in got] == [list(vars(r).items()) for r in want]
    assert list(vars(got[0])) == [f.name for f in dataclasses.fields(KafkaRecord)]
