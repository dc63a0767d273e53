"""The one settings object.

Values come from (highest first): keyword arguments, environment variables, a TOML file
named by ``STREAMLEARN_CONFIG``, defaults. Every field reads ``STREAMLEARN_<FIELD>``;
the two addresses also read the conventional ``KAFKA_BOOTSTRAP`` and ``REDIS_URL``.
Persistent names (topics, Redis prefix, consumer group) are explicit and versioned,
never derived from code structure, so renaming code never orphans data.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "STREAMLEARN_"


def _env(name: str, *aliases: str) -> Any:
    return AliasChoices(name, ENV_PREFIX + name.upper(), *aliases)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", populate_by_name=True
    )

    # --- addresses -------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", validation_alias=_env("kafka_bootstrap", "KAFKA_BOOTSTRAP")
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("redis_url", "REDIS_URL"))

    # --- Kafka security (passed to both Faust/aiokafka and confluent-kafka) -------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None

    # --- persistent names ------------------------------------------------------------
    topic_events: str = "streamlearn.events.v1"
    topic_predictions: str = "streamlearn.predictions.v1"
    topic_feedback: str = "streamlearn.feedback.v1"
    topic_deadletter: str = "streamlearn.deadletter.v1"
    topic_shadow: str = Field("streamlearn.shadow.v1", description="challengers' predictions (never served)")
    topic_lifecycle: str = Field("streamlearn.lifecycle.v1", description="audit trail of model decisions")
    topic_drift: str = Field("streamlearn.drift.v1", description="drift alarms")
    topic_partitions: int = Field(1, ge=1, description="partitions for topics this system creates")
    app_id: str = Field("streamlearn-v1", description="Faust app id = consumer group")
    redis_prefix: str = Field("sl:v1", description="namespace of every Redis key")

    # --- learning ----------------------------------------------------------------------
    model_name: str = "default"
    model_spec: str = Field("logreg", description="short name from streamlearn.models.spec.SPECS")
    feature_view: str = Field("entity_v1", description="name from streamlearn.featurestore.definitions")
    artifact_key: SecretStr = Field(
        SecretStr("streamlearn-dev-key-change-me"), description="HMAC-SHA256 key for model artifacts"
    )

    # --- model lifecycle: registry, promotion gate, limits, canary, drift ----------------
    # (the pure logic reading these: models/registry.py, gate.py, canary.py, drift.py)
    registry_url: str = Field(
        "", description="model registry: redis://... or file:///dir; empty = the state Redis (REDIS_URL)"
    )
    gate_alpha: float = Field(0.05, gt=0, lt=1, description="false-promotion bound, valid checked every event")
    gate_margin: float = Field(0.0, ge=0, description="challenger must beat the champion's mean loss by more")
    gate_min_samples: int = Field(500, ge=1, description="paired labeled events before any promotion")
    gate_floor: float = Field(0.5, description="absolute quality floor of the challenger's rolling metric")
    gate_floor_metric: Literal["accuracy", "loss"] = Field(
        "accuracy", description="accuracy: floor is a minimum; loss: floor is a maximum mean loss"
    )
    gate_loss: Literal["brier", "log", "zero_one", "abs", "squared"] = "brier"
    gate_log_eps: float = Field(1e-3, gt=0, lt=0.5, description="log loss clips probabilities to [eps, 1-eps]")
    gate_loss_scale: float = Field(1.0, gt=0, description="regression errors are clipped to this")
    gate_window: int = Field(1000, ge=1, description="rolling window (paired events) for reports and the floor")
    promotion_max: int = Field(1, ge=1, description="at most this many promotions per promotion_window_s")
    promotion_window_s: float = Field(3600.0, gt=0)
    promotion_cooldown_s: float = Field(600.0, ge=0, description="no promotion this long after the last one")
    promotions_frozen: bool = Field(False, description="kill switch: refuse every automatic promotion")
    canary_fraction: float = Field(0.1, gt=0, le=1, description="share of entities a canary serves")
    canary_window: int = Field(1000, ge=1, description="labeled canary events before it becomes champion")
    canary_threshold: float = Field(0.02, ge=0, description="roll back if its mean loss is worse by more")
    canary_alpha: float = Field(0.05, gt=0, lt=1)
    drift_concept_detector: Literal["adwin", "ddm", "page_hinkley"] = "adwin"
    drift_concept_params: dict[str, float] = Field(
        default_factory=dict, description="overrides of the detector's parameters, e.g. {\"delta\": 0.01}"
    )
    drift_grace: int = Field(4000, ge=0, description="labels before concept alarms count (model warm-up)")
    drift_min_gap: int = Field(1000, ge=0, description="labels between two concept alarms")
    drift_critical_delta: float = Field(0.1, gt=0, description="error-rate rise that makes an alarm critical")
    drift_feature_reference: int = Field(1000, ge=10, description="events in the data-drift reference window")
    drift_feature_window: int = Field(500, ge=10, description="events per data-drift check")
    drift_feature_alpha: float | None = Field(
        None, gt=0, lt=1, description="pin the family-wise alpha per data check (default: from the budget)")
    drift_feature_correction: Literal["holm", "bonferroni", "none"] = "holm"
    drift_false_alarms_per_100k: float = Field(
        1.0, gt=0, description="false drift alarms allowed per 100k events, over all detectors (thresholds follow)")
    drift_warmup: int = Field(
        5000, ge=0, description="events before data/label references are taken; labels a champion learns before "
        "its bias is judged")
    drift_feature_min_effect: float = Field(
        0.1, ge=0, le=1, description="KS distance (or missing-rate change) a data alarm also needs")
    drift_label_min_effect: float = Field(0.05, ge=0, le=1, description="the same for the label distribution")
    drift_bias_window: int = Field(1000, ge=1)
    drift_bias_threshold: float = Field(0.1, gt=0, description="|mean score - mean label| that alarms")
    drift_rollback_within: int = Field(2000, ge=0, description="labels after a promotion in which drift rolls back")
    lifecycle_auto: bool = Field(True, description="let the gate, canary and drift detectors act on their own")
    lifecycle_canary: bool = Field(True, description="a gate-passed challenger serves as a canary first")
    lifecycle_max_challengers: int = Field(3, ge=1, description="shadow challengers kept at once")
    retrain_interval_s: float = Field(
        0.0, ge=0, description="learner retrains from the archive this often and adopts the result (0 = off)")
    retrain_estimator: Literal["sgd", "hgb"] = "sgd"
    drift_actions: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "concept.warning": ["warn"], "concept.drift": ["warn", "start_challenger"],
            "concept.critical": ["warn", "start_challenger", "request_retrain"],
            "data.drift": ["warn"], "data.critical": ["warn", "start_challenger"],
            "bias.drift": ["warn"], "bias.critical": ["warn", "start_challenger"],
        },
        description="'<kind>.<severity>' -> actions (warn, start_challenger, request_retrain, rollback)",
    )

    # --- state lifetimes (seconds, wall clock) ------------------------------------------
    entity_ttl_s: int = Field(7 * 86400, ge=1, description="idle entity state expires after this")
    served_ttl_s: int = Field(
        3 * 86400, ge=1, description="how long a served feature vector waits for its label"
    )
    checkpoint_interval_s: float = Field(5.0, gt=0, description="model snapshot period")

    # --- input limits (over-limit input is dead-lettered) ------------------------------
    max_message_bytes: int = 256 * 1024
    max_features: int = 512
    max_string_length: int = 1024

    # --- transport tuning (see shared notes on Faust over tansu) -----------------------
    batch_max: int = Field(500, ge=1, description="events per take() batch")
    # a 5 ms window: half-load p50/p99 event->prediction ~21/39 ms against 39/70 with 20 ms,
    # same max throughput (a backlog fills batches at once). A 5 ms fetch wait as well cost
    # ~10% of max throughput (smaller batches) for no clear latency gain.
    batch_within_s: float = Field(0.005, gt=0, description="max wait to fill a batch")
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 0.5
    max_poll_records: int = 500
    max_poll_interval_s: float = 60.0
    fetch_max_wait_ms: int = Field(20, ge=1, description="broker-side wait for fetch data (Faust: 1500)")

    # --- replay archive (streamlearn archive run; see README "Replay, backtests and retraining")
    archive_dir: str = Field("streamlearn-archive", description="archive root: a local directory")
    archive_group_id: str = Field("streamlearn-archiver-v1", description="the archiver's consumer group")
    archive_roll_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="roll an archive file at this size")
    archive_roll_s: float = Field(300.0, gt=0, description="... or when it is this old (seconds)")
    archive_retention_days: float = Field(0.0, ge=0, description="delete archive files older than this; 0 = keep")

    # --- HTTP ----------------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    http_score_timeout_s: float = Field(
        10.0, gt=0, description="POST /score answers 503 if the state store does not answer within this"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("STREAMLEARN_CONFIG")
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # --- derived client configs -------------------------------------------------------
    def confluent_config(self, **extra: Any) -> dict[str, Any]:
        """Config for confluent-kafka clients (producer, consumer, admin)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism or self.kafka_security_protocol.startswith("SASL"):
            # PLAIN by default, as Faust's credentials (librdkafka alone would pick GSSAPI)
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism or "PLAIN"
            conf["sasl.username"] = self.kafka_sasl_username or ""
            conf["sasl.password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
            )
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = self.kafka_ssl_cafile
        conf.update(extra)
        return conf

    def to_env(self) -> dict[str, str]:
        """These settings as the environment variables a worker process reads."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            # complex fields (dicts, lists) are parsed from the environment as JSON
            env[ENV_PREFIX + name.upper()] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        return env

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log or print: secrets stay masked, URLs lose their credentials."""
        return {k: ("***" if isinstance(v, SecretStr) else redact_url(v) if k.endswith("_url") and v else v)
                for k, v in self.model_dump().items()}


def redact_url(url: str) -> str:
    """``redis://user:password@host:6379/0`` -> ``redis://***@host:6379/0``: safe to print.

    >>> redact_url("rediss://:s3cret@cache.internal:6380/0?ssl_ca_certs=/ca.pem")
    'rediss://***@cache.internal:6380/0?ssl_ca_certs=/ca.pem'
    >>> redact_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    base, q, query = rest.partition("?")
    if "@" not in base:  # masks up to the last "@": a password may hold an unescaped "/"
        return url
    return f"{scheme}{sep}***@{base.rsplit('@', 1)[1]}{q}{query}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
