"""Settings mistakes get one clear line: a missing config file, a misspelt variable, a bad
value; the public development key is refused outside development mode; topic settings."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from streamlearn import settings as settings_mod
from streamlearn.settings import (
    DEV_ARTIFACT_KEY,
    OTHER_ENV_VARS,
    RETIRED_ENV_VARS,
    Settings,
    SettingsError,
    env_names,
    get_settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the variables it sets (the caller's shell may have some)."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMLEARN_") or name in ("KAFKA_BOOTSTRAP", "REDIS_URL"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _one_line_error(**kwargs) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    text = str(info.value)
    assert "\n" not in text and len(text) < 300, text
    return text


def test_a_config_file_that_does_not_exist_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMLEARN_CONFIG", str(tmp_path / "nope.toml"))
    assert _one_line_error() == f"STREAMLEARN_CONFIG={tmp_path / 'nope.toml'}: no such file " \
                                "(unset it or point it at a TOML file)"
    with pytest.raises(SettingsError):
        get_settings()  # what every command uses


def test_a_config_file_that_is_not_toml_or_has_unknown_keys_is_refused(monkeypatch, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("topic_partitions = \n")
    monkeypatch.setenv("STREAMLEARN_CONFIG", str(bad))
    assert _one_line_error().startswith(f"STREAMLEARN_CONFIG={bad}: not valid TOML")
    bad.write_text('topic_partitionz = 3\nredis_url = "redis://cache:6379/0"\n')
    assert _one_line_error() == f"unknown setting {bad}: topic_partitionz (did you mean topic_partitions?)"
    bad.write_text('topic_partitions = "three"\n')
    assert _one_line_error().startswith(f"{bad}: topic_partitions='three': Input should be a valid integer")
    bad.write_text('topic_partitions = 3\n')
    assert load_settings().topic_partitions == 3


def test_unknown_streamlearn_variables_are_refused_with_a_did_you_mean(monkeypatch, caplog):
    monkeypatch.setenv("STREAMLEARN_TOPIC_PARTITIONZ", "3")
    assert _one_line_error() == \
        "unknown setting STREAMLEARN_TOPIC_PARTITIONZ (did you mean STREAMLEARN_TOPIC_PARTITIONS?)"
    monkeypatch.setenv("STREAMLEARN_NOTHING_LIKE_IT", "1")
    assert _one_line_error().endswith("(and 1 more)")
    with caplog.at_level(logging.WARNING, logger="streamlearn.settings"):
        assert load_settings(strict_env=False).topic_partitions == 1
    assert "unknown setting STREAMLEARN_TOPIC_PARTITIONZ (did you mean STREAMLEARN_TOPIC_PARTITIONS?): ignored" \
        in caplog.text


def test_variables_read_elsewhere_and_the_conventional_addresses_are_not_unknown(monkeypatch):
    for name in OTHER_ENV_VARS - {"STREAMLEARN_CONFIG"}:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("streamlearn_model_name", "fraud")  # environment names are case-insensitive
    s = load_settings()
    assert (s.kafka_bootstrap, s.model_name) == ("kafka:9092", "fraud")


def test_a_retired_setting_is_warned_about_not_refused(monkeypatch, caplog):
    """Settings a previous release read (the Faust-era batch window) must not stop an upgrade."""
    monkeypatch.setenv("STREAMLEARN_BATCH_WITHIN_S", "0.005")
    with caplog.at_level(logging.WARNING, logger="streamlearn.settings"):
        assert load_settings().batch_max == 500
    assert "STREAMLEARN_BATCH_WITHIN_S is no longer read (a batch is what the consumer has fetched" in caplog.text


def test_every_streamlearn_variable_the_repository_mentions_is_a_setting_or_known():
    known = set(env_names()) | OTHER_ENV_VARS | set(RETIRED_ENV_VARS)
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),  # the README's sections moved to docs/
             ROOT / "docker-compose.yml", ROOT / "deploy" / "Dockerfile",
             *[p for d in ("streamlearn", "streams", "models", "replay", "featurestore", "schemas")
               for p in (ROOT / d).rglob("*.py")]]
    # (a name shown as the typo in a did-you-mean example is not a mention)
    seen = {m.group() for f in files for m in re.finditer(r"STREAMLEARN_[A-Z0-9_]*[A-Z0-9]\b(?!\s*\(did you mean)",
                                                          f.read_text())}
    assert seen, "the scan found the variables"
    assert not sorted(seen - known)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("STREAMLEARN_TOPIC_PARTITIONS", "abc",
     "STREAMLEARN_TOPIC_PARTITIONS='abc': Input should be a valid integer, unable to parse string as an integer"),
    ("STREAMLEARN_GATE_ALPHA", "2", "STREAMLEARN_GATE_ALPHA='2': Input should be less than 1"),
    ("STREAMLEARN_DRIFT_ACTIONS", "{bad",
     "STREAMLEARN_DRIFT_ACTIONS: not valid JSON (Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1))"),
    ("STREAMLEARN_KAFKA_SECURITY_PROTOCOL", "TLS", "STREAMLEARN_KAFKA_SECURITY_PROTOCOL='TLS': Input should be "
     "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
    ("STREAMLEARN_TOPIC_RETENTION_MS", '{"event": 1}', "topic_retention_ms: unknown topic kind 'event' "
     "(did you mean events?) (kinds: events, predictions, feedback, deadletter, shadow, lifecycle, drift)"),
    ("STREAMLEARN_TOPIC_MIN_INSYNC_REPLICAS", "2", "topic_min_insync_replicas (2) is above "
     "topic_replication_factor (1): every write would fail"),
])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    assert _one_line_error() == expected


def test_a_bad_secret_is_not_echoed(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("STREAMLEARN_KAFKA_SASL_MECHANISM", "PLAIN")
    assert load_settings().kafka_sasl_password.get_secret_value() == "s3cret"
    assert "abc" not in _one_line_error(artifact_key=["abc"])


def test_the_development_key_is_refused_outside_development_mode(monkeypatch):
    s = load_settings()
    assert s.artifact_key.get_secret_value() == DEV_ARTIFACT_KEY and not s.development
    with pytest.raises(SettingsError, match="public development key: set your own"):
        s.check_worker()
    monkeypatch.setenv("STREAMLEARN_DEVELOPMENT", "1")  # what the embedded demo and tests set
    load_settings().check_worker()
    monkeypatch.delenv("STREAMLEARN_DEVELOPMENT")
    monkeypatch.setenv("STREAMLEARN_ARTIFACT_KEY", "a" * 64)
    load_settings().check_worker()
    monkeypatch.setenv("STREAMLEARN_ARTIFACT_KEY", "")
    with pytest.raises(SettingsError, match="is empty"):
        load_settings().check_worker()


def test_topic_configs_per_kind():
    s = Settings(topic_replication_factor=3, topic_min_insync_replicas=2,
                 topic_configs={"events": {"compression.type": "zstd"}})
    day = 86_400_000
    assert s.topic_config(s.topic_events) == {"min.insync.replicas": "2", "retention.ms": str(7 * day),
                                              "compression.type": "zstd"}
    assert s.topic_config(s.topic_lifecycle) == {"min.insync.replicas": "2", "retention.ms": "-1"}
    assert s.topic_config(s.topic_deadletter)["retention.ms"] == str(30 * day)
    assert s.topic_config("someone.elses.topic") == {"min.insync.replicas": "2"}
    assert Settings(topic_retention_ms={}).topic_config(s.topic_events) == {}
    # feedback must outlive the wait for a late label's event
    assert int(Settings().topic_config(s.topic_feedback)["retention.ms"]) > Settings().served_ttl_s * 1000
    assert settings_mod.TOPIC_KINDS == tuple(k for k in settings_mod.TOPIC_KINDS if hasattr(s, f"topic_{k}"))
