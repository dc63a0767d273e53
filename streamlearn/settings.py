"""The one settings object.

Values come from (highest first): keyword arguments, environment variables, a TOML file
named by ``STREAMLEARN_CONFIG``, the project's ``streamlearn.toml`` (``STREAMLEARN_PROJECT``:
its ``[settings]`` table, plus the model name, champion spec, feature view and task it
declares), defaults. Every field reads ``STREAMLEARN_<FIELD>``;
the two addresses also read the conventional ``KAFKA_BOOTSTRAP`` and ``REDIS_URL``.
Persistent names (topics, Redis prefix, consumer group) are explicit and versioned,
never derived from code structure, so renaming code never orphans data.

Entry points load them with :func:`load_settings` (``get_settings`` caches it): every
mistake is one :class:`SettingsError` line, never a traceback. A ``STREAMLEARN_CONFIG``
that names no file, an unknown ``STREAMLEARN_*`` variable (a typo would otherwise be
ignored silently) and an invalid value are refused.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _SourceError

log = logging.getLogger(__name__)

ENV_PREFIX = "STREAMLEARN_"
CONFIG_ENV = "STREAMLEARN_CONFIG"
#: the artifact key a fresh checkout signs with: public, so never acceptable in production
DEV_ARTIFACT_KEY = "streamlearn-dev-key-change-me"
#: ``STREAMLEARN_*`` variables that are not settings fields but are read elsewhere on purpose;
#: every other unknown one is refused (see :func:`unknown_env`)
OTHER_ENV_VARS = frozenset({
    CONFIG_ENV,
    "STREAMLEARN_BENCH_EXPECT", "STREAMLEARN_BENCH_LABELS",  # the benchmark's apps (tools/bench_apps.py)
})
#: settings an earlier release read and this one does not: warned about and ignored, so an
#: upgrade does not refuse a deployment that still sets them
RETIRED_ENV_VARS = {
    "STREAMLEARN_BATCH_WITHIN_S": "a batch is what the consumer has fetched, there is no fill window",
    "STREAMLEARN_MAX_POLL_RECORDS": "STREAMLEARN_BATCH_MAX bounds a batch",
}
#: topic kinds: the keys of ``topic_retention_ms`` and ``topic_configs``
TOPIC_KINDS = ("events", "predictions", "feedback", "deadletter", "shadow", "lifecycle", "drift")
_DAY_MS = 86_400_000


class SettingsError(ValueError):
    """A setting is wrong; ``str()`` is one line naming the variable or file and what to check."""


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
    # Topic durability and retention, applied when ensure_topics creates a topic (an existing
    # topic is left alone: change it with kafka-configs). No topic is compacted: each is a log
    # whose history matters (the archiver and backtests read it) and keys are entities or event
    # ids, so compaction would drop predictions and labels, or the lifecycle's audit trail.
    topic_replication_factor: int = Field(
        1, ge=1, description="replicas per partition; 1 warns unless `development` (3 with 3+ brokers)")
    topic_min_insync_replicas: int | None = Field(
        None, ge=1, description="min.insync.replicas of the created topics; unset = the broker's default")
    topic_retention_ms: dict[str, int] = Field(
        default_factory=lambda: {
            "events": 7 * _DAY_MS, "predictions": 7 * _DAY_MS, "shadow": 3 * _DAY_MS,
            # labels may wait for their event up to served_ttl_s (3 days): keep them longer
            "feedback": 7 * _DAY_MS, "deadletter": 30 * _DAY_MS,
            "lifecycle": -1, "drift": -1,  # audit trails, low volume: kept forever
        },
        description="retention.ms per topic kind (events, predictions, feedback, deadletter, shadow, "
        "lifecycle, drift); -1 = forever; a kind left out takes the broker's default")
    topic_configs: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="more Kafka topic configs per kind, e.g. {\"events\": {\"compression.type\": \"zstd\"}}")
    app_id: str = Field("streamlearn-v1", description="Faust app id = consumer group")
    redis_prefix: str = Field("sl:v1", description="namespace of every Redis key")

    # --- learning ----------------------------------------------------------------------
    project: str = Field("", description="project directory (streamlearn.toml + Python modules); "
                                         "empty: the built-in card-fraud project")
    task: Literal["", "binary", "multiclass", "regression"] = Field(
        "", description="prediction task; empty: inferred from the champion's estimator")
    model_name: str = "default"
    model_spec: str = Field("logreg", description="a preset (streamlearn.models.estimators.spec.SPECS), a "
                                                 "project spec name or module:factory?param=value")
    feature_view: str = Field("entity_v1", description="name from streamlearn.featurestore.definitions")
    artifact_key: SecretStr = Field(
        SecretStr(DEV_ARTIFACT_KEY), description="HMAC-SHA256 key for model artifacts"
    )
    development: bool = Field(
        False, description="development mode (the embedded demo, tests, `infra up` set it): a worker accepts "
        "the development artifact key and 1-replica topics do not warn. Never set it in production")

    # --- model lifecycle: registry, promotion gate, limits, canary, drift ----------------
    # (the pure logic reading these: models/registry/versions.py, gate.py, canary.py, drift.py)
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

    # --- transport tuning (measured on the embedded broker: docs/embedded-broker.md) --
    # A batch is what the consumer has fetched when the loop asks (streams/consumer.py): one
    # event at low load, up to batch_max under a backlog (a fetch brings up to 1 MB per partition)
    batch_max: int = Field(500, ge=1, description="events (or labels) per batch, at most")
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 0.5
    max_poll_interval_s: float = 60.0
    fetch_max_wait_ms: int = Field(20, ge=1, description="broker-side wait for fetch data while idle (Faust: 1500)")
    # The embedded broker (tansu) sees a record that arrives during a fetch's wait only when
    # the wait ends, so the wait adds to the latency of events arriving between fetches: the
    # worker's wait drops to this while records flow, and goes back to fetch_max_wait_ms after
    # ~50 ms idle (idle polls stay at the 20 ms rate). Apache Kafka answers on arrival.
    fetch_min_wait_ms: int = Field(2, ge=1, description="broker-side wait for fetch data while records flow")

    # --- replay archive (streamlearn archive run; see docs/replay.md)
    archive_dir: str = Field("streamlearn-archive", description="archive root: a local directory")
    archive_group_id: str = Field("streamlearn-archiver-v1", description="the archiver's consumer group")
    archive_roll_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="roll an archive file at this size")
    archive_roll_s: float = Field(300.0, gt=0, description="... or when it is this old (seconds)")
    archive_retention_days: float = Field(0.0, ge=0, description="delete archive files older than this; 0 = keep")

    # --- HTTP ----------------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="address the worker's HTTP server binds (0.0.0.0: all)")
    web_port: int = 6066
    stop_timeout_s: float = Field(
        10.0, gt=0, description="a graceful stop (SIGTERM) that takes longer ends the process: safe as a crash")
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
        path = os.environ.get(CONFIG_ENV)
        if path:
            # a missing file would otherwise be read as empty: every value silently the default
            if not Path(path).is_file():
                raise SettingsError(f"{CONFIG_ENV}={path}: no such file (unset it or point it at a TOML file)")
            try:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            except (tomllib.TOMLDecodeError, OSError) as exc:
                raise SettingsError(f"{CONFIG_ENV}={path}: not valid TOML: {exc}") from None
        project = init_settings.init_kwargs.get("project") or os.environ.get("STREAMLEARN_PROJECT")
        if project:
            sources.append(ProjectSettingsSource(settings_cls, project))
        return tuple(sources)

    @model_validator(mode="after")
    def _check_topics(self) -> Settings:
        for name in ("topic_retention_ms", "topic_configs"):
            unknown = sorted(set(getattr(self, name)) - set(TOPIC_KINDS))
            if unknown:
                raise ValueError(f"{name}: unknown topic kind {unknown[0]!r}{_did_you_mean(unknown[0], TOPIC_KINDS)}"
                                 f" (kinds: {', '.join(TOPIC_KINDS)})")
        if (self.topic_min_insync_replicas or 0) > self.topic_replication_factor:
            raise ValueError(f"topic_min_insync_replicas ({self.topic_min_insync_replicas}) is above "
                             f"topic_replication_factor ({self.topic_replication_factor}): every write would fail")
        return self

    def uses_dev_key(self) -> bool:
        return self.artifact_key.get_secret_value() == DEV_ARTIFACT_KEY

    def check_worker(self) -> None:
        """What a worker refuses to start with (raises :class:`SettingsError`).

        The development key is public: artifacts signed with it can be forged by anyone, so
        it is accepted only in development mode (the embedded demo and tests set it).
        """
        if not self.artifact_key.get_secret_value():
            raise SettingsError("STREAMLEARN_ARTIFACT_KEY is empty: set a secret key (e.g. `openssl rand -hex 32`)")
        if self.uses_dev_key() and not self.development:
            raise SettingsError(
                "STREAMLEARN_ARTIFACT_KEY is the public development key: set your own "
                "(e.g. `openssl rand -hex 32`), or STREAMLEARN_DEVELOPMENT=1 for a local try-out")

    def topic_kind(self, topic: str) -> str | None:
        """``events``, ``predictions`` ... for one of this system's topic names, else None."""
        for kind in TOPIC_KINDS:
            if getattr(self, f"topic_{kind}") == topic:
                return kind
        return None

    def topic_config(self, topic: str) -> dict[str, str]:
        """The Kafka configs ``ensure_topics`` creates ``topic`` with."""
        kind = self.topic_kind(topic)
        conf: dict[str, str] = {}
        if self.topic_min_insync_replicas is not None:
            conf["min.insync.replicas"] = str(self.topic_min_insync_replicas)
        if kind in self.topic_retention_ms:
            conf["retention.ms"] = str(self.topic_retention_ms[kind])
        conf.update(self.topic_configs.get(kind or "", {}))
        return conf

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


PROJECT_FILE = "streamlearn.toml"


class ProjectSettingsSource(PydanticBaseSettingsSource):
    """Settings a project declares: its ``[settings]`` table and what its other tables name
    (``[models].name`` and ``.champion``, ``[features].name``, ``[project].task``). The
    project's feature view and model specs themselves are built by :mod:`streamlearn.project`."""

    def __init__(self, settings_cls: type[BaseSettings], project: str) -> None:
        super().__init__(settings_cls)
        self.values = project_settings(project)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def project_settings(project: str) -> dict[str, Any]:
    """The settings values a project directory declares (raises ValueError, one line)."""
    import tomllib

    path = Path(project) / PROJECT_FILE
    if not path.is_file():
        raise SettingsError(f"{path}: no such file (a project is a directory with {PROJECT_FILE}; "
                         f"create one with `streamlearn init {project}`)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    table = data.get("settings", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: [settings] must be a table")
    for key in table:
        if key not in Settings.model_fields:
            raise SettingsError(f"{path}: settings.{key}: unknown setting{_did_you_mean(key, Settings.model_fields)}")
    values: dict[str, Any] = {"project": str(Path(project).resolve()), **table}
    models, features, proj = data.get("models", {}), data.get("features", {}), data.get("project", {})
    if isinstance(models, dict):
        if "name" in models:
            values.setdefault("model_name", models["name"])
        if "champion" in models:
            values.setdefault("model_spec", models["champion"])
    if isinstance(features, dict) and "name" in features:
        values.setdefault("feature_view", features["name"])
    if isinstance(proj, dict) and "task" in proj:
        task = proj["task"]
        kind = task.get("kind", "") if isinstance(task, dict) else task
        tasks = ("binary", "multiclass", "regression")
        if kind not in tasks:  # named here, with its file and key, not as the setting it feeds
            raise SettingsError(f"{path}: project.task: must be one of {', '.join(tasks)}, not {kind!r}"
                                f"{_did_you_mean(str(kind), tasks)}")
        values.setdefault("task", kind)
    return values


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


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def env_names() -> dict[str, str]:
    """Every environment variable a setting reads (upper case) -> its field."""
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        names[ENV_PREFIX + field.upper()] = field
        alias = info.validation_alias
        for choice in alias.choices if isinstance(alias, AliasChoices) else []:
            if isinstance(choice, str):
                names[choice.upper()] = field
    return names


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """One line per ``STREAMLEARN_*`` variable that no setting reads, with a did-you-mean."""
    known = set(env_names()) | OTHER_ENV_VARS | set(RETIRED_ENV_VARS)
    lines = []
    for name in sorted(environ):
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
            lines.append(f"unknown setting {name}{_did_you_mean(name.upper(), known)}")
    return lines


def _where(field: str, environ: Mapping[str, str], kwargs: Mapping[str, Any]) -> str:
    """Where a field's value came from, as an operator would look for it."""
    if field in kwargs:
        return field
    names = [n for n, f in env_names().items() if f == field]
    for n in sorted(environ):
        if n.upper() in names:
            return n
    if environ.get(CONFIG_ENV):
        return f"{environ[CONFIG_ENV]}: {field}"
    return field


def _one_line(exc: ValidationError, environ: Mapping[str, str], kwargs: Mapping[str, Any]) -> str:
    errors = exc.errors()
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"unknown setting {_where(field, environ, kwargs)}{_did_you_mean(field, Settings.model_fields)}{more}"
    msg = first["msg"].removeprefix("Value error, ")
    if not field:  # a check across fields
        return f"{msg}{more}"
    shown = "***" if field.endswith(("_key", "_password")) else repr(first.get("input"))[:80]
    return f"{_where(field, environ, kwargs)}={shown}: {msg}{more}"


def load_settings(*, strict_env: bool = True, **kwargs: Any) -> Settings:
    """Settings from the environment (and ``STREAMLEARN_CONFIG``), or one-line :class:`SettingsError`.

    ``strict_env``: refuse unknown ``STREAMLEARN_*`` variables (a misspelt one would silently
    leave its setting at the default); with False they are only logged as warnings.
    ``kwargs`` override the environment, as in ``Settings(**kwargs)``.
    """
    environ = os.environ
    unknown = unknown_env(environ)
    if unknown and strict_env:
        raise SettingsError(unknown[0] + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    for line in unknown:
        log.warning("%s: ignored", line)
    for name in sorted(n for n in environ if n.upper() in RETIRED_ENV_VARS):
        log.warning("%s is no longer read (%s): ignored", name, RETIRED_ENV_VARS[name.upper()])
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, environ, kwargs)) from None
    except _SourceError as exc:  # a JSON-valued variable (dicts, lists) that is not JSON
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else ""
        where = _where(field, environ, kwargs) if field in Settings.model_fields else "settings"
        cause = str(exc.__cause__ or exc).splitlines()[0]
        raise SettingsError(f"{where}: not valid JSON ({cause})") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (:func:`load_settings`, cached): raises :class:`SettingsError`."""
    return load_settings()
