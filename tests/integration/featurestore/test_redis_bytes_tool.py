"""``python -m streamlearn.tools.redis_bytes``: Redis bytes per event, split by key kind."""

from __future__ import annotations

from streamlearn.tools.redis_bytes import run


def test_bytes_per_event_and_where_they_went():
    res = run(events=1500, window=40)  # on a private Redis it starts (it flushes its database)
    assert res["labels_learned"] > 1000
    assert res["bytes_per_event"] > 0
    srv = res["kinds"]["srv"]  # one served record per event, labelled or not
    assert srv["keys"] == 1500 and 0 < srv["value_len"] < srv["memory_usage"]
    assert sum(res["served_lengths"].values()) == min(1500, srv["keys"])
    assert sum(res["models_per_record"].values()) > 0 and min(res["models_per_record"]) >= 1
