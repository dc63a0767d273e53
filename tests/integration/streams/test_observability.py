"""Metrics, health/readiness and synchronous scoring over the worker's real HTTP port.

Workers are real subprocesses on the session's embedded broker and Redis; every request
below is a real HTTP call to the port the worker was started with (the same mechanism
``streamlearn demo`` uses to print its /metrics URL).
"""

from __future__ import annotations

import collections
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.featurestore.keys import Keys
from streamlearn.metrics import Metrics
from streamlearn.streams.loop import Counters, commands
from streamlearn.tools.harness import scrape
from streamlearn.tools.infra import start_redis
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for

# ------------------------------------------------------------------ HTTP helpers


def http(port: int, path: str, body: bytes | None = None, timeout: float = 15.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_json(port: int, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    raw = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    code, data = http(port, path, raw)
    return code, json.loads(data)


def value(families: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    key = (sample or family, tuple(sorted(labels.items())))
    assert key in families[family], f"{key} not in {sorted(families[family])}"
    return families[family][key]


def port_of(worker) -> int:
    return worker.process.web_port


def counters(worker) -> dict[str, int]:
    code, body = http_json(port_of(worker), "/models")
    assert code == 200
    return body["counters"]


# ------------------------------------------------------------------ the scrape after real traffic


def test_metrics_scrape_after_a_short_run_has_every_family(make_settings, start_worker):
    """Traffic that exercises every outcome, then one real scrape: each family is there and the
    numbers equal what was sent (computed from the traffic, not copied from a run)."""
    s = make_settings()
    worker = start_worker(s)
    port = port_of(worker)
    send = Sender(s)
    events = make_events(120, seed=31)
    early, late = events[:100], events[100:]
    never = {"event_id": "never-scored", "label": True, "label_time": 1}
    # labels that arrive before their events (parked, then joined late) and one that never joins
    send.feedback([feedback_for(e) for e in late] + [never])
    wait_for(lambda: counters(worker)["labels_unmatched"] == len(late) + 1, 60, "labels parked")
    send.events(early)
    send.raw(s.topic_events, [b"\x00not an event"])  # dead letter: events / unknown_format
    send.raw(s.topic_feedback, [b'{"event_id": "x", "label": true}'])  # dead letter: feedback / schema
    send.events(late + [early[0]])  # early[0] again: a re-delivered event id
    # the early labels must find their events served (else they are parked: another outcome)
    wait_for(lambda: counters(worker)["events_scored"] == len(events) + 1, 60, "events scored")
    dup_labels = [feedback_for(e) for e in early[:3]]
    send.feedback([feedback_for(e) for e in early])
    wait_for(lambda: counters(worker)["labels_learned"] == len(events), 60, "labels learned")
    send.feedback(dup_labels)
    wait_for(lambda: counters(worker)["labels_duplicate"] == len(dup_labels), 60, "duplicate labels counted")

    # bad HTTP bodies: 4xx with the reason code the dead-letter topic would carry
    bad_bodies = [
        (b"{not json", 400, "invalid_json"),
        (b"\x00\x01binary", 400, "unknown_format"),
        (json.dumps({"event_id": "h", "entity": "e", "event_time": "noon", "features": {}}).encode(), 400, "schema"),
        (json.dumps({"event_id": "h", "entity": "e", "event_time": 1, "features": {}, "x": 1}).encode(), 400,
         "schema"),
        (b'{"event_id": "h", "entity": "e", "event_time": 1, "features": {"a": NaN}}', 400, "non_finite"),
        (b"[1, 2, 3]", 400, "unknown_format"),
        (b" " * (s.max_message_bytes + 1), 413, "limit"),
    ]
    for body, code, reason in bad_bodies:
        got, answer = http_json(port, "/score", body)
        assert (got, answer["error"]) == (code, reason), answer
        assert answer["detail"], "the reason comes with a human-readable detail"

    # lifecycle decisions through the operator command channel: add, promote, rollback, one refused.
    # The loop may take decisions of its own too (drift -> challenger, gate -> promotion), so the
    # expected counts are read from the lifecycle and drift topics, not assumed.
    r = redis.Redis.from_url(s.redis_url)
    control_key = Keys(s.redis_prefix, s.model_name).control
    for cmd in ({"op": "add", "spec": "hat"}, {"op": "promote", "version": 2}, {"op": "rollback"},
                {"op": "promote", "version": 99}):
        r.rpush(control_key, commands.encode(cmd))
    lifecycle = TopicReader(s, s.topic_lifecycle, "lifecycle")
    drift = TopicReader(s, s.topic_drift, "drift")
    mine = [x for x in lifecycle.wait_count(4) if x["details"].get("by") == "operator" or x["action"] == "refused"]
    assert {"promoted", "rolled_back", "refused"} <= {x["action"] for x in mine}, lifecycle.records

    n_kafka_events = len(early) + 1 + len(late) + 1  # + the dead letter + the re-delivery

    def lifecycle_counts(fams: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
        got = {a: value(fams, f"streamlearn_model_{f}", f"streamlearn_model_{f}_total", model=s.model_name)
               for a, f in (("promoted", "promotions"), ("rolled_back", "rollbacks"), ("refused", "refusals"))}
        sent = collections.Counter(x["action"] for x in lifecycle.poll())
        return got, {a: sent[a] for a in got}

    def drift_counts(fams: dict[str, Any]) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], int]]:
        # one detection per new alarm position of a detector/feature (a repeated alarm is not new)
        last: dict[tuple[str, str], int] = {}
        sent: collections.Counter = collections.Counter()
        for d in drift.poll():
            key = (d["detector"], d["feature"] or "")
            if last.get(key) != d["position"]:
                sent[key] += 1
                last[key] = d["position"]
        got = {(lb["detector"], lb["feature"]): v for (name, items), v in fams["streamlearn_drift_detections"].items()
               if name.endswith("_total") for lb in [dict(items)]}
        return got, dict(sent)

    def settled() -> dict[str, Any] | None:
        fams = scrape(port)
        hw = value(fams, "streamlearn_consumer_highwater", topic=s.topic_events, partition="0")
        committed = value(fams, "streamlearn_consumer_committed_offset", topic=s.topic_events, partition="0")
        fb_committed = value(fams, "streamlearn_consumer_committed_offset", topic=s.topic_feedback, partition="0")
        got, sent = lifecycle_counts(fams)
        drift_got, drift_sent = drift_counts(fams)
        ok = hw == committed == n_kafka_events and fb_committed > 0 and got == sent and drift_got == drift_sent
        return fams if ok else None

    m = wait_for(settled, 60, "offsets committed and lifecycle counted", interval=0.5)

    # throughput
    assert value(m, "streamlearn_events_received", "streamlearn_events_received_total", path="kafka") \
        == n_kafka_events
    n_feedback = len(late) + 1 + 1 + len(early) + len(dup_labels)
    assert value(m, "streamlearn_feedback_received", "streamlearn_feedback_received_total") == n_feedback
    assert value(m, "streamlearn_predictions", "streamlearn_predictions_total", model=s.model_name, version="1",
                 stage="champion", path="kafka") == len(events) + 1
    assert value(m, "streamlearn_events_duplicate", "streamlearn_events_duplicate_total") == 1
    outcomes = {o: value(m, "streamlearn_labels", "streamlearn_labels_total", outcome=o)
                for o in ("learned", "duplicate", "unmatched", "joined_late")}
    assert outcomes == {"learned": len(early), "duplicate": len(dup_labels), "unmatched": len(late) + 1,
                        "joined_late": len(late)}
    assert value(m, "streamlearn_dead_letters", "streamlearn_dead_letters_total", source="events",
                 reason="unknown_format") == 1
    assert value(m, "streamlearn_dead_letters", "streamlearn_dead_letters_total", source="feedback",
                 reason="schema") == 1
    for code, n in collections.Counter(code for _, code, _ in bad_bodies).items():
        assert value(m, "streamlearn_http_requests", "streamlearn_http_requests_total", endpoint="score",
                     code=str(code)) == n

    # latency histograms: one observation per delivered prediction; store and model batches timed
    assert value(m, "streamlearn_event_to_prediction_seconds", "streamlearn_event_to_prediction_seconds_count",
                 path="kafka") == len(events) + 1
    assert value(m, "streamlearn_event_to_prediction_seconds", "streamlearn_event_to_prediction_seconds_sum",
                 path="kafka") > 0
    for op in ("read", "write"):
        assert value(m, "streamlearn_feature_store_seconds", "streamlearn_feature_store_seconds_count", op=op) > 0
        assert value(m, "streamlearn_feature_store_seconds", "streamlearn_feature_store_seconds_sum", op=op) > 0
    for op in ("score", "learn"):
        assert value(m, "streamlearn_model_batch_seconds", "streamlearn_model_batch_seconds_count", op=op) > 0
        assert value(m, "streamlearn_model_batch_seconds", "streamlearn_model_batch_seconds_sum", op=op) > 0
    # learn batches see every decodable label (not the dead letter): all events', the duplicates, "never"
    assert value(m, "streamlearn_batch_size", "streamlearn_batch_size_sum", op="learn") == len(events) \
        + len(dup_labels) + 1

    # consumer lag per partition: caught up, with the real offsets behind it
    assert value(m, "streamlearn_consumer_lag", topic=s.topic_events, partition="0") == 0
    assert value(m, "streamlearn_consumer_lag", topic=s.topic_feedback, partition="0") == 0
    assert value(m, "streamlearn_consumer_highwater", topic=s.topic_feedback, partition="0") == n_feedback

    # models: metrics per version and stage equal the loop's own; no stale stage series
    _, models = http_json(port, "/models")
    by_version = {x["version"]: x for x in models["models"]}
    assert by_version[2]["stage"] != "champion", "rolled back"
    for v, x in by_version.items():
        for metric, val in x["metrics"].items():
            assert value(m, "streamlearn_model_metric", model=s.model_name, version=str(v), stage=x["stage"],
                         metric=metric) == val
        assert value(m, "streamlearn_model_labels_learned", model=s.model_name, version=str(v),
                     stage=x["stage"]) == x["labels_learned"]
    # every event was scored before any label was learned, so v1's online metrics are those of
    # an untrained model: non-zero log loss over exactly the labels sent
    assert by_version[1]["labels_learned"] == len(events) and by_version[1]["metrics"]["log_loss"] > 0
    for v, x in by_version.items():
        stages = {dict(k[1])["stage"] for k in m["streamlearn_model_metric"] if dict(k[1])["version"] == str(v)}
        assert stages == {x["stage"]}, f"v{v} changed stage; only its current stage may have series"
    got, sent = lifecycle_counts(m)
    assert got == sent and min(got.values()) >= 1, (got, sent)
    # prediction bias of the champion: mean served score - mean label over the labels learned
    first: dict[str, float] = {}
    for p in TopicReader(s, s.topic_predictions, "prediction").wait_count(len(events), key="event_id"):
        first.setdefault(p["event_id"], p["score"])
    labels = [float(feedback_for(e)["label"]) for e in events]
    expected_bias = (sum(first[e["event_id"]] for e in events) - sum(labels)) / len(events)
    assert value(m, "streamlearn_prediction_bias", model=s.model_name, version="1", stage="champion") \
        == pytest.approx(expected_bias, rel=1e-9, abs=1e-12)

    # drift alarms (if the loop raised any on this traffic) feed the drift families one to one
    drift_got, drift_sent = drift_counts(m)
    assert drift_got == drift_sent

    # drift and bias: families exposed (fed by the drift work), ready gauge, worker info
    for fam in ("streamlearn_drift_state", "streamlearn_drift_last_position", "streamlearn_drift_detections",
                "streamlearn_prediction_bias"):
        assert fam in m
    assert value(m, "streamlearn_worker_info", app_id=s.app_id, model=s.model_name, spec=s.model_spec,
                 feature_view=s.feature_view) == 1
    code, ready = http_json(port, "/ready")
    assert code == 200 and ready["ready"], ready
    assert http_json(port, "/health") == (200, {"status": "ok"})


# ------------------------------------------------------------------ /score == streaming score


def test_score_over_http_equals_the_streaming_score(make_settings, start_worker):
    """Same event, same model state -> same score, whether it comes over HTTP or Kafka.

    Design: train the model with labels over Kafka, then stop sending labels, so the model is
    frozen (every answer below must report the same ``labels_learned``). An event with
    features F on a *fresh* entity is scored over HTTP (id h-F), and an identical event on
    another fresh entity over Kafka (id k-F): fresh entities have the same (empty) state and
    the entity key itself is not a feature, so both paths see the same feature vector and
    model and must give exactly the same score. A second feature set G checks the model is
    not constant (otherwise equality would prove nothing). Finally, /score must have
    persisted what it served like the topic path: re-sending id h-F over Kafka *with G's
    features* returns h-F's original score (re-delivery reuses the stored vector), and a
    label for h-F on the feedback topic is learned.
    """
    s = make_settings()
    worker = start_worker(s)
    port = port_of(worker)
    send = Sender(s)
    preds = TopicReader(s, s.topic_predictions, "prediction")
    train = make_events(80, seed=41)
    send.events(train)
    send.feedback([feedback_for(e) for e in train])
    wait_for(lambda: counters(worker)["labels_learned"] == len(train), 60, "training labels learned")
    preds.wait_count(len(train))

    t = train[-1]["event_time"] + 1000
    feats = {"F": {"amount": 91.5, "kind": "b", "flag": True}, "G": {"amount": 3.25, "kind": "c", "flag": False}}
    http_scores: dict[str, dict[str, Any]] = {}
    for name, f in feats.items():
        code, p = http_json(port, "/score", {"event_id": f"h-{name}", "entity": f"http-{name}", "event_time": t,
                                             "features": f})
        assert code == 200, p
        http_scores[name] = p
    send.events([{"event_id": f"k-{name}", "entity": f"kafka-{name}", "event_time": t, "features": f}
                 for name, f in feats.items()])
    stream = {p["event_id"]: p for p in preds.wait_count(len(train) + 2)}
    for name in feats:
        h, k = http_scores[name], stream[f"k-{name}"]
        assert h["labels_learned"] == k["labels_learned"] == len(train), "model frozen between the two"
        assert (h["model_name"], h["model_version"]) == (k["model_name"], k["model_version"])
        assert h["score"] == k["score"], f"{name}: http {h['score']} != kafka {k['score']}"
        assert h["probabilities"] == k["probabilities"] and h["predicted"] == k["predicted"]
    assert http_scores["F"]["score"] != http_scores["G"]["score"], "a constant model would prove nothing"

    # /score persisted its served vector: the same id over Kafka (other features) reuses it
    send.events([{"event_id": "h-F", "entity": "kafka-again", "event_time": t + 1, "features": feats["G"]}])
    again = [p for p in preds.wait_count(len(train) + 3) if p["event_id"] == "h-F"]
    assert again and again[0]["score"] == http_scores["F"]["score"]
    send.feedback([{"event_id": "h-F", "label": True, "label_time": t + 5}])
    wait_for(lambda: counters(worker)["labels_learned"] == len(train) + 1, 60, "label for an HTTP-scored event")
    m = scrape(port)
    assert value(m, "streamlearn_predictions", "streamlearn_predictions_total", model=s.model_name, version="1",
                 stage="champion", path="http") == 2
    assert value(m, "streamlearn_event_to_prediction_seconds", "streamlearn_event_to_prediction_seconds_count",
                 path="http") == 2


# ------------------------------------------------------------------ readiness follows Redis


def test_ready_reports_not_ready_while_redis_is_down(make_settings, start_worker, tmp_path):
    """A Redis of its own (the session's must stay up): stop it, /ready turns 503 naming Redis
    while /health stays 200 and /score answers 503 in time instead of hanging; start it again
    on the same port, /ready is 200 again and the same event scores."""
    data = tmp_path / "own-redis"
    data.mkdir()
    own = start_redis(data)
    try:
        s = make_settings(redis_url=f"redis://127.0.0.1:{own.port}/0", http_score_timeout_s=1.0)
        worker = start_worker(s)
        port = port_of(worker)
        wait_for(lambda: http_json(port, "/ready")[0] == 200, 60, "ready with Redis up")

        own.stop()

        def not_ready() -> dict[str, Any] | None:
            code, body = http_json(port, "/ready")
            return body if code == 503 else None

        body = wait_for(not_ready, 30, "/ready to report Redis down")
        assert body["checks"]["redis"] is False and body["checks"]["broker"] is True
        assert any(r.startswith("redis:") for r in body["reasons"]), body
        assert http_json(port, "/health") == (200, {"status": "ok"}), "liveness does not depend on Redis"
        event = {"event_id": "during-outage", "entity": "e1", "event_time": 1, "features": {"amount": 1.0}}
        code, answer = http_json(port, "/score", event)
        assert (code, answer["error"]) == (503, "unavailable"), answer
        worker.assert_alive()

        own = start_redis(data, own.port)
        wait_for(lambda: http_json(port, "/ready")[0] == 200, 60, "ready again after Redis is back")
        code, answer = http_json(port, "/score", event)
        assert code == 200 and answer["event_id"] == "during-outage", answer
        worker.assert_alive()
    finally:
        own.stop()


# ------------------------------------------------------------------ pure metric logic (no broker)


def _samples(m: Metrics, family: str) -> dict[tuple, float]:
    fams = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
    return {tuple(sorted(s.labels.items())): s.value for s in fams[family].samples if not s.name.endswith("_created")}


def test_counter_sync_counts_only_new_traffic_and_survives_a_reset():
    m = Metrics()
    c = Counters(events_duplicate=5, labels_joined_late=7, checkpoints=2)  # restored: baseline, not traffic
    m.sync_counters(c)
    c.events_duplicate += 2
    c.labels_joined_late += 1
    m.sync_counters(c)
    m.sync_counters(c)  # a second scrape adds nothing
    m.sync_counters(Counters())  # counters replaced: new baseline, never a negative increment
    assert _samples(m, "streamlearn_events_duplicate") == {(): 2}
    assert _samples(m, "streamlearn_labels")[(("outcome", "joined_late"),)] == 1
    assert _samples(m, "streamlearn_checkpoints") == {(): 0}


def test_stage_changes_and_revoked_partitions_leave_no_stale_series():
    m = Metrics()
    m.set_models([("fraud", 1, "champion", {"auc": 0.8}, 10), ("fraud", 2, "shadow", {"auc": 0.9}, 10)])
    m.set_models([("fraud", 1, "shadow", {"auc": 0.8}, 11), ("fraud", 2, "champion", {"auc": 0.9}, 11)])
    assert set(_samples(m, "streamlearn_model_metric")) == {
        (("metric", "auc"), ("model", "fraud"), ("stage", "shadow"), ("version", "1")),
        (("metric", "auc"), ("model", "fraud"), ("stage", "champion"), ("version", "2"))}
    m.set_consumer_offsets([("ev", 0, 120, 100), ("ev", 1, 50, None), ("fb", 0, None, None)])
    assert _samples(m, "streamlearn_consumer_lag") == {
        (("partition", "0"), ("topic", "ev")): 20, (("partition", "1"), ("topic", "ev")): 50}
    m.set_consumer_offsets([("ev", 1, 60, 55)])  # partition 0 revoked
    assert _samples(m, "streamlearn_consumer_lag") == {(("partition", "1"), ("topic", "ev")): 5}


def test_lifecycle_and_drift_records_feed_their_families():
    m = Metrics(model="fraud")
    rec = {"model_name": "fraud", "version": 2, "champion": 2}
    for action in ("challenger_started", "promoted", "refused", "refused", "rolled_back"):
        m.announced("lifecycle", {**rec, "action": action})
    assert _samples(m, "streamlearn_model_refusals") == {(("model", "fraud"),): 2}
    drift = {"model_name": "fraud", "version": 1, "detector": "concept:adwin", "feature": None, "position": 400,
             "severity": "drift"}
    m.announced("drift", drift)
    m.announced("drift", drift)  # the same alarm twice is one detection
    m.announced("drift", {**drift, "position": 900, "severity": "warning"})  # a warning is a state, not a drift
    assert _samples(m, "streamlearn_drift_state")[(("detector", "concept:adwin"), ("feature", ""))] == 1
    m.announced("drift", {**drift, "position": 950, "severity": "info"})  # error fell: not a detection
    key = (("detector", "concept:adwin"), ("feature", ""))
    assert _samples(m, "streamlearn_drift_detections")[key] == 1
    assert _samples(m, "streamlearn_drift_last_position")[key] == 400
    assert _samples(m, "streamlearn_drift_state")[key] == 0
    m.announced("drift", {**drift, "position": 1200, "severity": "critical"})
    assert _samples(m, "streamlearn_drift_detections")[key] == 2
    assert _samples(m, "streamlearn_drift_last_position")[key] == 1200
    assert _samples(m, "streamlearn_drift_state")[key] == 2
    with pytest.raises(ValueError, match="unknown lifecycle action"):
        m.lifecycle("fraud", "exploded")
