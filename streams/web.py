"""The worker's HTTP API (Faust web, aiohttp): metrics, health, readiness, models, scoring.

* ``GET /metrics``: Prometheus text of this worker's registry (each worker is scraped).
* ``GET /health``: liveness: the process and its event loop answer.
* ``GET /ready``: 200 only when the model is loaded, Redis answers a ping, the broker answers
  a metadata request and the consumer group has assigned this worker its partitions
  (possibly none, when there are more workers than partitions); else 503 with the reasons.
* ``GET /models``: the loop's models (version, spec, stage, labels learned, metrics) and counters.
* ``POST /score``: one event (JSON object, or Avro single-object bytes) scored synchronously by
  the same decoding/validation (``decode_event``) and the same ``OnlineLoop.score_batch`` as
  the topic path. Like the topic path it **persists** the served feature vector and updates
  the entity's state, so a label for the event on the feedback topic is learned like any
  other, and re-sending the same ``event_id`` (either way) reuses the stored features. The
  prediction is returned, not published to the predictions topic.
  Errors: 400 ``{"error": reason, "detail": ...}`` with the dead-letter reason codes, 413 over
  ``max_message_bytes``, 503 before the model is loaded or when the store does not answer
  in time (``http_score_timeout_s``; the event is still scored once the store is back, and
  retrying the same event_id reuses its stored features).

Every error answers JSON ``{"error": code, "detail": text}``, also those raised outside the
views (unknown path 404, wrong method 405, an oversized body 413, an unexpected 500): see
:func:`json_errors`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web as aioweb
from faust import web

from streamlearn.metrics import CONTENT_TYPE_LATEST
from streamlearn.schemas import InvalidRecord
from streamlearn.schemas.validation import decode_event

if TYPE_CHECKING:
    import faust

    from streamlearn.streams.consumer import BatchConsumer, GroupState
    from streamlearn.streams.worker import WorkerRuntime

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0  # per dependency check: a hung dependency must not hang the probe


def _runtime(view: web.View) -> WorkerRuntime:
    return view.app.streamlearn_runtime  # type: ignore[attr-defined]


def _count(view: web.View, endpoint: str, code: int) -> None:
    _runtime(view).metrics.http_requests.labels(endpoint, str(code)).inc()


# ------------------------------------------------------------------ metrics
def champion_bias(loop: Any) -> float | None:
    """Mean served score minus mean label over the bias monitor's current window, if any.

    Read from the automatic lifecycle's ``BiasMonitor`` (models/governance/drift.py); None without
    automatic lifecycle or right after a window closed (the gauge keeps the last value).
    """
    bias = getattr(getattr(loop, "lifecycle", None), "bias", None)
    count = getattr(bias, "count", 0)
    if not count:
        return None
    return (bias.sum_score - bias.sum_label) / count


def refresh_metrics(app: faust.App, runtime: WorkerRuntime) -> None:
    """Bring scrape-time values up to date: loop counters, model gauges, consumer offsets."""
    m = runtime.metrics
    m.sync_counters(runtime.loop.counters)
    if runtime.ready.is_set():
        models = runtime.loop.models
        m.set_models((lr.name, v, models.stage(v), lr.metric_values(), lr.labels_learned)
                     for v, lr in sorted(models.learners.items()))
        bias = champion_bias(runtime.loop)
        if bias is not None:
            m.set_prediction_bias(models.name, models.champion, "champion", bias)
    m.set_consumer_offsets(app.streamlearn_intake.offsets())  # type: ignore[attr-defined]


class MetricsView(web.View):
    async def get(self, request: web.Request) -> web.Response:
        runtime = _runtime(self)
        refresh_metrics(self.app, runtime)
        await readiness(self.app, runtime)  # streamlearn_ready is current even if nobody probes /ready
        _count(self, "metrics", 200)
        return self.bytes(runtime.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# ------------------------------------------------------------------ health and readiness
class HealthView(web.View):
    async def get(self, request: web.Request) -> web.Response:
        _count(self, "health", 200)
        return self.json({"status": "ok"})


async def readiness(app: faust.App, runtime: WorkerRuntime) -> tuple[bool, dict[str, Any]]:
    """Check each dependency; the reasons say what is wrong in words an operator can act on."""
    group: GroupState = app.streamlearn_intake.group  # type: ignore[attr-defined]
    checks: dict[str, bool] = {}
    reasons: list[str] = []

    checks["model"] = runtime.ready.is_set()
    if not checks["model"]:
        reasons.append("model not loaded yet (restoring the checkpoint needs Redis)")

    try:
        checks["redis"] = bool(await asyncio.wait_for(runtime.backend.ping(), READY_TIMEOUT_S))
    except TimeoutError:
        checks["redis"] = False
    if not checks["redis"]:
        reasons.append(f"redis: no PONG from {_redact(runtime.settings.redis_url)} within {READY_TIMEOUT_S}s")

    topic = runtime.settings.topic_predictions
    try:
        md = await asyncio.get_running_loop().run_in_executor(
            None, lambda: runtime.out.producer.list_topics(topic=topic, timeout=READY_TIMEOUT_S))
        checks["broker"] = bool(md.brokers)
        if not checks["broker"]:
            reasons.append("broker: metadata lists no brokers")
    except Exception as exc:  # noqa: BLE001 - KafkaException and friends: report, not raise
        checks["broker"] = False
        reasons.append(f"broker: {exc}")

    checks["consumer_group"] = group.joined
    if not group.joined:
        reasons.append("consumer group: no partition assignment received yet")
    ok = all(checks.values())
    runtime.metrics.ready.set(1 if ok else 0)
    return ok, {"ready": ok, "checks": checks, "reasons": reasons,
                "group": {"rebalancing": group.rebalancing, "partitions": group.partitions}}


def _redact(url: str) -> str:
    # redis://user:password@host -> redis://***@host
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class ReadyView(web.View):
    async def get(self, request: web.Request) -> web.Response:
        ok, body = await readiness(self.app, _runtime(self))
        code = 200 if ok else 503
        _count(self, "ready", code)
        return self.json(body, status=code)


# ------------------------------------------------------------------ models
class ModelsView(web.View):
    async def get(self, request: web.Request) -> web.Response:
        runtime = _runtime(self)
        body = runtime.loop.status(runtime.status_extra())
        body["ready"] = runtime.ready.is_set()
        body["feature_view"] = runtime.settings.feature_view
        _count(self, "models", 200)
        return self.json(body)


# ------------------------------------------------------------------ scoring
async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None if it is longer than ``limit`` (never reads more than limit + 1 bytes)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    chunks, size = [], 0
    while size <= limit:
        chunk = await request.content.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


class ScoreView(web.View):
    async def post(self, request: web.Request) -> web.Response:
        runtime = _runtime(self)
        received = time.time()
        limit = runtime.settings.max_message_bytes
        body = await read_limited(request, limit)
        if body is None:
            return self._error(413, "limit", f"request body is over the {limit}-byte limit (max_message_bytes)")
        if not runtime.ready.is_set():
            return self._error(503, "not_ready", "model not loaded yet")
        try:
            event = decode_event(body, runtime.codec, runtime.limits)
        except InvalidRecord as err:
            return self._error(400, err.reason, err.detail)
        m = runtime.metrics
        m.received(1, "http")
        with m.loop_batch("score", 1, runtime.backend):
            # shielded: cancelling the loop mid-write would break its crash-consistency, so on a
            # timeout it finishes in the background (idempotent by event_id: a retry is safe)
            # (the loop retries the store forever; an HTTP caller gets a 503 instead)
            timeout = runtime.settings.http_score_timeout_s
            scoring = asyncio.ensure_future(runtime.loop.score_batch([event]))
            try:
                preds = await asyncio.wait_for(asyncio.shield(scoring), timeout)
            except TimeoutError:
                return self._error(503, "unavailable", f"state store did not answer within {timeout}s; "
                                   "retry with the same event_id")
            failed = [e for e in runtime.loop.feature_errors if e[0] is event]
            if failed:  # a user feature function raised on this event
                runtime.loop.feature_errors[:] = [e for e in runtime.loop.feature_errors if e[0] is not event]
                return self._error(400, failed[0][1], failed[0][2])
            pred, = preds
        now = time.time()
        pred.served_at = int(now * 1000)
        pred.latency_ms = (now - received) * 1000.0
        m.predictions_delivered([pred.model_version], [received], now, runtime.loop.models.stage, path="http")
        _count(self, "score", 200)
        return self.json(pred.record())

    def _error(self, code: int, reason: str, detail: str) -> web.Response:
        _count(self, "score", code)
        return self.json({"error": reason, "detail": detail}, status=code)


# ------------------------------------------------------------------ errors
ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "limit"}
RUNTIME_KEY = aioweb.AppKey("streamlearn_runtime", object)


@aioweb.middleware
async def json_errors(request: aioweb.Request, handler: Any) -> aioweb.StreamResponse:
    """aiohttp answers an unknown path, a wrong method or an oversized body with plain text;
    the API answers JSON everywhere, with the same shape as the views' own errors."""
    try:
        return await handler(request)
    except aioweb.HTTPException as exc:
        if exc.status < 400:
            raise
        status, detail = exc.status, f"{exc.reason}: {request.method} {request.path}"
        if status == 404:
            detail += f" (endpoints: {', '.join(VIEWS)})"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        if headers:
            detail += f" (allowed: {headers['Allow']})"
    except Exception as exc:  # noqa: BLE001 - a bug in a view: one JSON line, the traceback in the log
        log.exception("HTTP %s %s failed", request.method, request.path)
        status, detail, headers = 500, f"internal error: {type(exc).__name__}", {}
    runtime: Any = request.app.get(RUNTIME_KEY)
    if runtime is not None:  # bounded labels: unknown paths are not endpoints
        runtime.metrics.http_requests.labels("other", str(status)).inc()
    code = ERROR_CODES.get(status, "internal" if status >= 500 else f"http_{status}")
    return aioweb.json_response({"error": code, "detail": detail}, status=status, headers=headers)


# ------------------------------------------------------------------ wiring
VIEWS = {"/metrics": MetricsView, "/health": HealthView, "/ready": ReadyView, "/models": ModelsView,
         "/score": ScoreView}


def install(app: faust.App, runtime: WorkerRuntime, intake: BatchConsumer) -> None:
    """Register the views on ``app`` (which serves ``runtime``, fed by ``intake``)."""
    app.streamlearn_intake = intake  # type: ignore[attr-defined] - group state and offsets
    app.web.web_app.middlewares.append(json_errors)
    app.web.web_app[RUNTIME_KEY] = runtime  # for the middleware's request count
    for path, view in VIEWS.items():
        # a subclass per app: Faust stores the path on the class it registers
        app.page(path, name=f"streamlearn_{view.__name__}")(type(view.__name__, (view,), {}))
