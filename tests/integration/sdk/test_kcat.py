"""The kcat lines of the README and docs/, run verbatim against the embedded broker (skipped
without kcat).

Debian 12's kcat links librdkafka 2.0.2, which cannot parse tansu's ApiVersions answer (see
docs/wire-format.md, "kcat older than librdkafka 2.2"); its two setup lines give it the wheel's
newer librdkafka. With an old librdkafka the test also shows the failure the lines fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamlearn.schemas import SchemaRegistry
from streamlearn.sdk import decode_prediction
from streamlearn.settings import Settings
from streamlearn.streams.transport import ensure_topics
from streamlearn.tools.infra import start_broker

ROOT = Path(__file__).resolve().parents[3]
# where users read kcat lines: the README (producing JSON by hand) and docs/ (reading output, old kcat)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed")


def _readme_blocks() -> list[str]:
    """The shell (or unlabelled) code blocks of the README and docs/, fence by fence."""
    blocks, current, lang = [], None, ""
    for line in "\n".join(doc.read_text() for doc in DOCS).splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang in ("", "bash", "sh"):
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _kcat_commands() -> list[str]:
    """Every kcat command of the README and docs/, continuation lines joined, ``$ `` prompts removed."""
    out = []
    for block in _readme_blocks():
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.removeprefix("$ ").strip()
            if re.search(r"\bkcat -[PC]\b", line) and not line.startswith("#"):
                out.append(line)
    return out


def _setup_lines() -> list[str]:
    doc = (ROOT / "docs" / "wire-format.md").read_text()
    section = doc.split("\n## kcat older than librdkafka 2.2\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip()]


def _librdkafka_version(env: dict[str, str]) -> tuple[int, ...]:
    out = subprocess.run([KCAT, "-V"], capture_output=True, text=True, env=env, timeout=30)
    found = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return tuple(int(g) for g in found.groups())


def _bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_the_readme_kcat_lines_work_against_the_embedded_broker(tmp_path: Path):
    broker = start_broker(tmp_path)
    try:
        s = Settings(kafka_bootstrap=f"127.0.0.1:{broker.port}")
        ensure_topics(s)  # the default topic names the README uses, one partition each
        reg = SchemaRegistry.default()
        served = {"event_id": "e1", "entity": "card-7", "event_time": 1700000000000, "model_name": "default",
                  "model_version": 1, "labels_learned": 0, "score": 0.25, "predicted": False,
                  "probabilities": {"False": 0.75, "True": 0.25}, "served_at": 1700000000020,
                  "latency_ms": 20.0, "label_joined": None}
        producer = Producer(s.confluent_config())
        producer.produce(s.topic_predictions, reg.encoder("prediction")(served), b"card-7")
        assert producer.flush(30) == 0
        del producer  # no reconnect attempts after the broker stops

        home = tmp_path / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "KAFKA_BOOTSTRAP": s.kafka_bootstrap,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("LD_LIBRARY_PATH", None)
        commands = _kcat_commands()
        produce = [c for c in commands if "kcat -P" in c]
        consume = [c for c in commands if "kcat -C" in c]
        assert len(produce) == 2 and len(consume) == 1, commands

        setup = ""
        if _librdkafka_version(env) < (2, 2, 0):
            # the failure docs/wire-format.md explains: plain kcat cannot even get the broker's API versions
            bare = _bash(produce[0], env, tmp_path)
            assert "Read underflow" in bare.stderr, bare.stderr[-2000:]
            setup = "\n".join(_setup_lines()) + "\n"
            fixed = _bash(setup + f"{KCAT} -V", env, tmp_path)
            assert re.search(r"librdkafka (2\.([2-9]|\d\d)|[3-9])\.", fixed.stdout + fixed.stderr), fixed

        run = _bash(setup + "\n".join(produce + consume), env, tmp_path)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

        # what kcat sent is on the input topics, exactly as a worker reads it
        consumer = Consumer(s.confluent_config(**{"group.id": "kcat-check", "enable.auto.commit": False}))
        try:
            got = {}
            for topic in (s.topic_events, s.topic_feedback):
                consumer.assign([TopicPartition(topic, 0, 0)])
                msgs = []
                for _ in range(50):  # until the one record is there (10 s at most)
                    msgs += [m for m in consumer.consume(10, 0.2) if not m.error()]
                    if msgs:
                        break
                got[topic] = [(m.key(), reg.decode("event" if topic == s.topic_events else "feedback", m.value()))
                              for m in msgs]
        finally:
            consumer.close()
        (key, event), = got[s.topic_events]
        assert key == b"card-7" and event["event_id"] == "e1" and event["features"]["amount"] == 12.5
        (key, label), = got[s.topic_feedback]
        assert key == b"e1" and label["label"] is False
        # and kcat -C wrote the prediction's bytes, header and fingerprint as docs/producing.md shows
        data = (tmp_path / "p.bin").read_bytes()
        assert data[:10] == bytes.fromhex("c301cb3ded15a64dfe3e")
        assert reg.decode("prediction", data) == served and decode_prediction(data).event_id == "e1"
    finally:
        broker.stop()
