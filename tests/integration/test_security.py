"""Security settings, end to end where the embedded infrastructure allows it.

* Redis AUTH and TLS: a Redis with ``requirepass`` behind a TLS terminator (tests/netproxy.py;
  the bundled Valkey is built without TLS), a worker on ``rediss://:password@.../0?ssl_ca_certs=``.
* No secret leaks: that worker runs with a distinctive Redis password, artifact key and Kafka
  SASL password; none of them may appear in its log, its HTTP answers (/metrics, /models,
  /ready, /score), anything it stored in Redis (status keys, checkpoints, the model registry,
  the append-only file) or any topic, nor in ``streamlearn settings``.
* Kafka TLS: a dedicated tansu behind a TLS terminator (tansu 0.6 cannot serve TLS itself) that
  advertises the terminator's port, so every connection after bootstrap is TLS too; a worker
  with ``SSL`` + CA consumes (Faust/aiokafka) and produces (confluent-kafka) through it.
* Kafka SASL: tansu 0.6 has no PLAIN and no way to seed a first SCRAM user into a memory-backed
  broker, so the settings are checked where they turn into client configuration:
  confluent-kafka's dict and the aiokafka arguments Faust derives.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streamlearn.featurestore.keys import Keys
from streamlearn.models import artifacts
from streamlearn.sdk import EventProducer, PredictionConsumer
from streamlearn.settings import Settings
from streamlearn.streams.consumer import client_security
from streamlearn.streams.transport import topic_names
from streamlearn.tools.harness import free_port
from streamlearn.tools.infra import start_broker, start_redis
from tests.helpers import Sender, TopicReader, feedback_for, make_events, wait_for
from tests.netproxy import NetProxy


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl command; no extra Python package)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def http(port: int, path: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:  # /ready may answer 503; its body is checked too
        return err.read()


def redis_contents(client: redis.Redis) -> list[bytes]:
    """Every key and every value in a Redis, read by type (DUMP could compress a value)."""
    out: list[bytes] = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        elif kind == b"hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == b"set":
            out += list(client.smembers(key))
        elif kind == b"zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            out += [json.dumps([[i.decode(), {k.decode(): v.decode(errors="replace") for k, v in f.items()}]
                                for i, f in client.xrange(key)]).encode()]
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} for {key!r}")
    return out


def topic_contents(settings: Settings) -> list[bytes]:
    """Keys, values and headers of every message in every topic the system writes or reads."""
    c = Consumer(settings.confluent_config(**{"group.id": f"audit-{uuid.uuid4().hex[:8]}",
                                              "enable.auto.commit": False, "enable.partition.eof": True}))
    parts = []
    for topic in topic_names(settings):
        n = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
        parts += [TopicPartition(topic, p, 0) for p in range(n)]
    c.assign(parts)
    out: list[bytes] = []
    at_end: set[tuple[str, int]] = set()

    def drained() -> bool:
        for m in c.consume(1000, 0.2):
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    at_end.add((m.topic(), m.partition()))
                continue
            out.extend([m.key() or b"", m.value() or b""] + [v or b"" for _, v in (m.headers() or [])])
        return len(at_end) == len(parts)

    wait_for(drained, 60, "every topic read to its end")
    c.close()
    return out


def leaks(secrets: list[str], places: dict[str, list[bytes]]) -> list[str]:
    return [f"{s[:12]}... in {where}" for s in secrets for where, blobs in places.items()
            if any(s.encode() in b for b in blobs)]


def test_worker_on_redis_with_auth_over_tls_leaks_no_secret(make_settings, start_worker, cert_pair, tmp_path: Path):
    redis_pw = f"redis-pw-{uuid.uuid4().hex}"
    artifact_key = f"artifact-key-{uuid.uuid4().hex}"
    kafka_pw = f"kafka-pw-{uuid.uuid4().hex}"  # configured; the test broker is plaintext, so unused
    secrets = [redis_pw, artifact_key, kafka_pw]
    data = tmp_path / "redis"
    data.mkdir()
    cert, key = cert_pair
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    own = start_redis(data, requirepass=redis_pw)
    try:
        with NetProxy(own.port, tls=tls) as terminator:
            url = f"rediss://:{redis_pw}@127.0.0.1:{terminator.port}/0?ssl_ca_certs={cert}"
            with pytest.raises(redis.AuthenticationError):  # AUTH is really on
                redis.Redis(port=own.port).ping()
            with pytest.raises(redis.ConnectionError):  # and the TLS port speaks only TLS
                redis.Redis(port=terminator.port, password=redis_pw, socket_timeout=5).ping()
            with pytest.raises(redis.ConnectionError):  # with certificate verification
                redis.Redis.from_url(url.replace(f"?ssl_ca_certs={cert}", ""), socket_timeout=5).ping()

            # started side by side: one with a wrong password, one configured right
            wrong = make_settings(redis_url=url.replace(redis_pw, "not-" + redis_pw[4:]))
            bad = start_worker(wrong, wait_assigned=False, name="wrong-password")
            s = make_settings(redis_url=url, artifact_key=artifact_key, kafka_sasl_username="svc",
                              kafka_sasl_password=kafka_pw)
            worker = start_worker(s)

            # the wrong password: the worker says so and is not ready (it retries, as for an outage,
            # so a password rotated on the server side heals without a restart)
            wait_for(lambda: bad.assert_alive() or "invalid username-password pair" in bad.log(), 90,
                     "the misconfigured worker to name the problem")
            ready = json.loads(http(bad.process.web_port, "/ready"))
            assert ready["checks"]["redis"] is False and any(r.startswith("redis:") for r in ready["reasons"])
            bad.kill()  # misconfigured: nothing to save
            port = worker.process.web_port
            events = make_events(150, seed=91)
            send = Sender(s)
            send.events(events)
            send.raw(s.topic_events, [b"\x00not an event", b'{"event_id": "x", "entity": "e"}'])
            TopicReader(s, s.topic_predictions, "prediction").wait_count(len(events), key="event_id")
            send.feedback([feedback_for(e) for e in events])
            wait_for(lambda: worker.assert_alive() or worker.counters().get("labels_learned") == len(events), 60,
                     "labels learned through the TLS connection")
            web = {path: http(port, path) for path in ("/metrics", "/models", "/ready", "/health")}
            web["/score"] = http(port, "/score", json.dumps(dict(events[0], event_id="via-http")).encode())
            assert json.loads(web["/score"])["event_id"] == "via-http"
            assert worker.stop() == 0

            direct = redis.Redis.from_url(url)
            blob = direct.get(Keys.from_settings(s).checkpoint)
            assert artifacts.load(blob, artifact_key.encode()), "checkpoints are signed with the configured key"
            with pytest.raises(artifacts.ArtifactError):
                artifacts.load(blob, Settings().artifact_key.get_secret_value().encode())
            stored = redis_contents(direct)
            assert any(k.startswith(f"{s.redis_prefix}:".encode()) for k in stored), "the worker wrote via TLS"
        aof = [p.read_bytes() for p in data.rglob("*") if p.is_file() and "appendonly" in str(p)]
        assert aof, "Redis persisted its append-only file"
        cli = subprocess.run([sys.executable, "-m", "streamlearn", "settings"], capture_output=True, timeout=60,
                             env={**os.environ, **s.to_env()})
        assert cli.returncode == 0 and b"***@127.0.0.1" in cli.stdout
        places = {"worker log": [worker.log().encode(), bad.log().encode()], "HTTP": list(web.values()),
                  "Redis keys and values": stored, "Redis AOF": aof, "topics": topic_contents(s),
                  "streamlearn settings": [cli.stdout, cli.stderr]}
        assert not leaks(secrets, places), leaks(secrets, places)
        assert not leaks([redis_pw[4:]], {"wrong-password worker log": [bad.log().encode()]})
    finally:
        own.stop()


# ------------------------------------------------------------------ Kafka over TLS, end to end


def confluent_metadata(conf: dict, timeout: float = 3.0) -> list[str]:
    """The brokers a confluent-kafka client is told about (raises if it gets no metadata)."""
    md = AdminClient(conf).list_topics(timeout=timeout)
    return [f"{b.host}:{b.port}" for b in md.brokers.values()]


def aiokafka_metadata(settings: Settings, timeout: float = 5.0) -> list[str]:
    """The same through aiokafka, with the arguments the worker's consumer derives from ``settings``."""
    async def run() -> list[str]:
        client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout * 1000),
                                **client_security(settings))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            return [f"{b.host}:{b.port}" for b in client.cluster.brokers()]
        finally:
            await client.close()

    return asyncio.run(run())


def test_worker_over_kafka_tls_end_to_end(make_settings, start_worker, cert_pair, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Events in, predictions out, every Kafka connection TLS with a verified certificate:
    tansu listens in plaintext behind a TLS terminator and advertises only the terminator."""
    cert, key = cert_pair
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    tls_port = free_port()
    broker = start_broker(tmp_path, advertised_port=tls_port)
    try:
        with NetProxy(broker.port, port=tls_port, tls=tls) as terminator:
            tls_addr = f"127.0.0.1:{terminator.port}"
            good = Settings(kafka_bootstrap=tls_addr, kafka_security_protocol="SSL", kafka_ssl_cafile=str(cert))
            # both clients, configured from the settings, get metadata naming only the TLS port
            assert confluent_metadata(good.confluent_config(), timeout=10) == [tls_addr]
            assert aiokafka_metadata(good, timeout=10) == [tls_addr]
            # the same settings without the CA (the system store cannot verify the certificate),
            # or in plaintext, get no metadata
            no_ca = good.model_copy(update={"kafka_ssl_cafile": None})
            plain = good.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
            for refused in (no_ca, plain):
                with pytest.raises(KafkaException) as failed:
                    confluent_metadata(refused.confluent_config(), timeout=3)
                assert failed.value.args[0].code() == KafkaError._TRANSPORT, "a failed connection, not a slow one"
                with pytest.raises(KafkaConnectionError):
                    aiokafka_metadata(refused, timeout=3)
            assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, "refused for the certificate, not by chance"

            s = make_settings(kafka_bootstrap=tls_addr, kafka_security_protocol="SSL", kafka_ssl_cafile=str(cert))
            worker = start_worker(s)  # admin and producer (confluent-kafka), consumer (Faust/aiokafka): TLS
            events = make_events(60, seed=47)
            with EventProducer(s) as producer:  # the SDK's producer, over TLS
                sent = [producer.send(ev) for ev in events]
                producer.flush(15)
            assert all(f.result(0).ok for f in sent)
            seen: set[str] = set()
            with PredictionConsumer(s, from_beginning=True, dedupe=True) as preds:
                def all_scored() -> bool:
                    worker.assert_alive()
                    seen.update(p.event_id for p in preds.poll(0.2))
                    return len(seen) == len(events)

                wait_for(all_scored, 30, "every prediction, read back over TLS")
            assert seen == {ev["event_id"] for ev in events}
            assert worker.stop() == 0
    finally:
        broker.stop()


# ------------------------------------------------------------------ Kafka security settings -> clients


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", [None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_security_settings_configure_both_clients_alike(protocol: str, mechanism: str | None, cert_pair
                                                             ) -> None:
    """The worker talks to Kafka through two clients (aiokafka consumes, confluent-kafka
    produces and administers): one setting must configure both the same way."""
    cert, _ = cert_pair
    s = Settings(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism, kafka_sasl_username="svc",
                 kafka_sasl_password="pw-1", kafka_ssl_cafile=str(cert))
    conf = s.confluent_config()
    aio = client_security(s)
    assert conf["security.protocol"] == aio["security_protocol"] == protocol
    if protocol.startswith("SASL"):
        assert conf["sasl.mechanism"] == aio["sasl_mechanism"] == (mechanism or "PLAIN")
        assert conf["sasl.username"] == aio["sasl_plain_username"] == "svc"
        assert conf["sasl.password"] == aio["sasl_plain_password"] == "pw-1"
    else:
        assert "sasl_mechanism" not in aio
    if "SSL" in protocol:
        assert conf["ssl.ca.location"] == str(cert)
        ctx = aio["ssl_context"]
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert ctx.cert_store_stats()["x509_ca"] >= 1, "the configured CA is loaded"
    assert "pw-1" not in json.dumps(s.redacted(), default=str)
