"""The offset-gap guard and the adaptive fetch wait, without a broker (streams/gapguard.py).

The broker's skip is chance; here a gap is forced: by hand for the guard, and with real
Kafka record batches through aiokafka's own parsing code for the worker's fetcher patch.
"""

from __future__ import annotations

import struct

import pytest
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import DefaultRecordBase, DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from streamlearn.streams import consumer as consumer_module
from streamlearn.streams.gapguard import AdaptiveWait, GapGuard, OffsetGapError, partitions_behind


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_contiguous_offsets_pass_and_nothing_is_counted():
    g = GapGuard()
    g.reset("t", 0, 5)
    assert [g.admit("t", 0, o) for o in range(5, 50)] == [None] * 45
    assert g.gaps == 0 and g.expected("t", 0) == 50


def test_a_gap_is_refused_counted_and_logged_once_until_the_missing_offsets_arrive(caplog):
    seen = []
    clock = Clock()
    g = GapGuard(timeout_s=10, clock=clock, on_gap=lambda *a: seen.append(a), name="reader")
    g.reset("ev", 3, 100)
    assert g.admit("ev", 3, 100) is None
    with caplog.at_level("WARNING"):
        for _ in range(5):  # the broker keeps answering with the later batch for a while
            clock.t += 0.5
            assert g.admit("ev", 3, 104) == 101
    assert g.gaps == 1 and g.missing == 3 and seen == [("ev", 3, 101, 104)] and g.open_gaps == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["reader: offset gap on ev[3]: expected offset 101, the broker returned 104 (3 missing); "
                        "fetching again from 101"]
    assert [g.admit("ev", 3, o) for o in range(101, 106)] == [None] * 5
    assert g.open_gaps == 0 and g.expected("ev", 3) == 106
    assert g.admit("ev", 3, 110) == 106, "a later hole is a new gap"
    assert g.gaps == 2 and len(seen) == 2


def test_a_gap_that_never_fills_is_a_clear_error_after_the_timeout():
    clock = Clock()
    g = GapGuard(timeout_s=30, clock=clock)
    g.reset("fb", 0, 7)
    assert g.admit("fb", 0, 9) == 7
    clock.t += 29
    assert g.admit("fb", 0, 9) == 7
    clock.t += 2
    with pytest.raises(OffsetGapError, match=r"fb\[0\]: offsets 7\.\.8 still missing after 31\.0s"):
        g.admit("fb", 0, 9)


def test_unknown_start_takes_the_first_record_and_rewinds_are_accepted():
    g = GapGuard()
    g.reset("t", 0, -2)  # OFFSET_BEGINNING: a logical offset, not a position
    assert g.admit("t", 0, 40) is None and g.expected("t", 0) == 41
    assert g.admit("t", 0, 12) is None, "a rebalance re-delivering from a commit is not a gap"
    assert g.expected("t", 0) == 13 and g.gaps == 0
    g.forget("t", 0)
    assert g.admit("t", 0, 500) is None and g.gaps == 0


def test_filter_batch_cuts_only_the_gapped_partition_and_passes_errors():
    g = GapGuard()
    for p in (0, 1):
        g.reset("t", p, 0)
    batch = [("t", 0, 0), ("t", 1, 0), None, ("t", 0, 1), ("t", 0, 3), ("t", 1, 1), ("t", 0, 4), ("t", 0, 2)]
    kept, seeks = g.filter_batch(batch, lambda item: item)
    assert kept == [("t", 0, 0), ("t", 1, 0), None, ("t", 0, 1), ("t", 1, 1)]
    assert seeks == {("t", 0): 2} and g.gaps == 1
    kept, seeks = g.filter_batch([("t", 0, 2), ("t", 0, 3)], lambda item: item)  # after the seek back
    assert kept == [("t", 0, 2), ("t", 0, 3)] and seeks == {} and g.open_gaps == 0


def test_adaptive_wait_grows_only_when_starved_below_the_high_watermark():
    w = AdaptiveWait(20, 500)
    assert [w.update(got_data=False, behind=True) for _ in range(6)] == [40, 80, 160, 320, 500, 500]
    assert [w.update(got_data=True) for _ in range(6)] == [250, 125, 62, 31, 20, 20]
    assert w.update(got_data=False, behind=False) == 20 and w.starved == 6
    assert partitions_behind([(10, 10, False), (5, 9, True)]) == (True, False)
    assert partitions_behind([(10, 10, False), (5, 9, False)]) == (False, True)
    assert partitions_behind([(10, None, False)]) == (False, False)



def test_adaptive_wait_is_short_while_records_flow_and_back_to_base_when_idle():
    """Flowing: the wait drops to ``low_ms`` (tansu sees a record only when a wait ends);
    idle for ``idle_after_ms``: back to the base wait (idle polls stay at the base rate);
    starvation still grows it past the base and comes back down through it."""
    w = AdaptiveWait(20, 500, low_ms=2, idle_after_ms=50)
    assert [w.update(got_data=True) for _ in range(4)] == [10, 5, 2, 2]
    # short gaps between records (a few empty replies) keep it short
    for _ in range(10):
        assert [w.update(got_data=False) for _ in range(5)] == [2] * 5
        assert w.update(got_data=True) == 2
    idle = [w.update(got_data=False) for _ in range(40)]
    assert idle[:24] == [2] * 24 and idle[24:28] == [4, 8, 16, 20] and set(idle[28:]) == {20}
    assert w.update(got_data=True) == 10  # flowing again: halved towards low
    # a long partition starves the short wait: the guard grows it as before, from wherever it is
    w2 = AdaptiveWait(20, 500, low_ms=2)
    w2.update(got_data=True), w2.update(got_data=True), w2.update(got_data=True)
    assert w2.current_ms == 2
    assert [w2.update(got_data=False, behind=True) for _ in range(9)] == [4, 8, 16, 32, 64, 128, 256, 500, 500]
    assert w2.update(got_data=True) == 250
    assert [w2.update(got_data=False) for _ in range(4)] == [125, 62, 31, 20], "idle: back to base, not below"
    assert w2.starved == 9
    # low_ms is clamped to [1, base]
    assert AdaptiveWait(20, 500, low_ms=50).low_ms == 20 and AdaptiveWait(20, 500, low_ms=0).low_ms == 1

def _batch(base: int, n: int, control: bool = False) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=int(control), producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(n):
        b.append(i, timestamp=1_700_000_000_000 + i, key=b"k", value=b"v%d" % (base + i), headers=[])
    buf = b.build()
    struct.pack_into(">q", buf, 0, base)  # the broker assigns the base offset (not covered by the CRC)
    if control:  # only brokers write control batches (transaction markers): set the bit, re-sign
        attrs_at, crc_at = DefaultRecordBase.ATTRIBUTES_OFFSET, DefaultRecordBase.CRC_OFFSET
        attrs = struct.unpack_from(">h", buf, attrs_at)[0] | DefaultRecordBase.CONTROL_MASK
        struct.pack_into(">h", buf, attrs_at, attrs)
        struct.pack_into(">I", buf, crc_at, calc_crc32c(bytes(buf[attrs_at:])))
    return bytes(buf)


def _records(fetch_offset: int, *batches: bytes):
    return aiokafka_fetcher.PartitionRecords(TopicPartition("ev", 0), MemoryRecords(b"".join(batches)), [],
                                             fetch_offset, None, None, True, 0)


def test_worker_fetcher_stops_at_a_hole_and_fetches_again_from_the_first_missing_offset(monkeypatch):
    """A fetch reply with offsets 10-12 and 15-16 (13-14 not yet readable): the records after
    the hole never reach the worker, and the partition's next fetch asks for 13."""
    consumer_module.patch_aiokafka()
    seen = []
    monkeypatch.setattr(consumer_module, "FETCH_GUARD", GapGuard(on_gap=lambda *a: seen.append(a)))
    recs = _records(10, _batch(10, 3), _batch(15, 2))
    assert [r.offset for r in recs] == [10, 11, 12]
    assert recs.next_fetch_offset == 13 and seen == [("ev", 0, 13, 15)]
    assert list(recs) == [], "cut for good"

    # the hole at the start of a reply (the fetch at 13 gets the later batch): nothing handed out
    again = _records(13, _batch(15, 2))
    assert list(again) == [] and again.next_fetch_offset == 13
    assert len(seen) == 1, "the same gap is counted once"

    # the next reply has it: everything in order, the gap closes
    filled = _records(13, _batch(13, 2), _batch(15, 2))
    assert [r.offset for r in filled] == [13, 14, 15, 16] and filled.next_fetch_offset == 17
    assert consumer_module.FETCH_GUARD.open_gaps == 0


def test_worker_fetcher_passes_a_reply_that_starts_inside_a_batch():
    """A fetch at 12 may return the whole batch 10-14: records before the position are skipped
    by aiokafka, which is not a gap."""
    consumer_module.patch_aiokafka()
    recs = _records(12, _batch(10, 5), _batch(15, 1))
    assert [r.offset for r in recs] == [12, 13, 14, 15] and recs.next_fetch_offset == 16


def test_worker_fetcher_lets_a_transaction_marker_through(monkeypatch):
    """The one legitimate jump on an uncompacted topic: a commit marker (control batch) takes
    an offset the consumer never sees. Not a gap."""
    consumer_module.patch_aiokafka()
    monkeypatch.setattr(consumer_module, "FETCH_GUARD", GapGuard())
    recs = _records(10, _batch(10, 2), _batch(12, 1, control=True), _batch(13, 2))
    assert [r.offset for r in recs] == [10, 11, 13, 14] and recs.next_fetch_offset == 15
    assert consumer_module.FETCH_GUARD.gaps == 0
