"""The model registry, against both stores: the real session Redis and a directory."""

from __future__ import annotations

import os
import pickle
import threading
import uuid
from pathlib import Path

import pytest
import redis

from streamlearn.models.artifacts import ArtifactError
from streamlearn.models.estimators.spec import build_model
from streamlearn.models.registry.versions import (
    DirectoryStore,
    ModelRegistry,
    RedisStore,
    RegistryError,
    code_version,
    open_registry,
)
from streamlearn.settings import Settings

KEY = b"test-registry-key"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture(params=["redis", "dir"])
def new_store(request, tmp_path):
    """A factory of stores over the same data: a second call is the registry after a restart."""
    if request.param == "redis":
        url, prefix = request.getfixturevalue("infra").redis_url, f"r{uuid.uuid4().hex[:8]}"
        return lambda: RedisStore(url, prefix)
    return lambda: DirectoryStore(tmp_path / "registry")


@pytest.fixture
def reg(new_store):
    return ModelRegistry(new_store(), KEY, clock=Clock())


def _trained(spec: str = "logreg"):
    model = build_model(spec)
    for i in range(50):
        model.learn_one({"x": float(i % 7), "y": float(i % 3)}, i % 7 > 3)
    return model


def test_register_records_lineage_spec_params_data_and_code(reg):
    model = _trained()
    v1 = reg.register("fraud", model, spec="logreg", stage="champion", reason="bootstrap",
                      trained_on={"feedback": {"0": [0, 50]}}, metrics={"accuracy": 0.91})
    v2 = reg.register("fraud", _trained("hat"), spec="hat", parent=1, metrics={"accuracy": 0.93},
                      trained_on={"archive": ["2026-01-01T00:00Z", "2026-01-02T00:00Z"]}, by="drift")
    assert (v1.version, v1.stage, v2.version, v2.parent, v2.stage) == (1, "champion", 2, 1, "shadow")
    got = reg.get("fraud", 1)
    assert got == v1
    opt = got.params["LogisticRegression"]["optimizer"]
    assert opt == {"class": "river.optim.sgd.SGD",
                   "params": {"lr": {"class": "river.optim.schedulers.Constant", "params": {"learning_rate": 0.05}}}}
    assert got.trained_on == {"feedback": {"0": [0, 50]}} and got.metrics == {"accuracy": 0.91}
    assert got.code_version == code_version() and len(got.code_version["git"]) == 40
    assert got.code_version["package"] == "0.1.0"
    assert got.created_at < reg.get("fraud", 2).created_at
    assert [v.version for v in reg.list("fraud")] == [1, 2] and reg.names() == ["fraud"]
    assert [v.version for v in reg.list(stage="shadow")] == [2]
    loaded = reg.load("fraud", 1)
    x = {"x": 5.0, "y": 1.0}
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)
    with pytest.raises(RegistryError, match="no parent version 9"):
        reg.register("fraud", {}, spec="logreg", parent=9)
    with pytest.raises(RegistryError, match="no version 7"):
        reg.get("fraud", 7)


def test_promote_rollback_retire_and_the_audit_trail(reg):
    for i in range(1, 4):
        reg.register("m", {"i": i}, spec="logreg", stage="champion" if i == 1 else "shadow")
    assert reg.previous_champion("m") is None
    reg.set_stage("m", 2, "canary", "gate passed: lower bound 0.01", by="gate")
    with pytest.raises(RegistryError, match="already the canary"):
        reg.set_stage("m", 3, "canary", "second canary")
    assert reg.rollback("m", "canary worse by 0.05", by="canary").version == 1  # champion unchanged
    assert reg.get("m", 2).stage == "shadow" and reg.canary("m") is None
    reg.set_stage("m", 2, "canary", "retry", by="gate")
    reg.promote("m", 2, "canary window passed", by="canary")
    reg.promote("m", 3, "operator", by="operator")
    assert reg.champion("m").version == 3 and reg.previous_champion("m").version == 2
    assert [v.stage for v in reg.list("m")] == ["retired", "retired", "champion"]
    with pytest.raises(RegistryError, match="cannot go from champion to retired"):
        reg.retire("m", 3, "no")
    assert reg.rollback("m", "error rate up after promotion", by="drift").version == 2
    assert reg.rollback("m", "again").version == 1  # a rolled-back champion is never restored
    with pytest.raises(RegistryError, match="no previous champion"):
        reg.rollback("m", "nothing left")
    with pytest.raises(RegistryError, match="cannot go from retired to champion"):
        reg.promote("m", 3, "zombie")
    trail = [(h.version, h.from_stage, h.to_stage, h.by) for h in reg.history("m")]
    assert trail[:3] == [(1, None, "champion", "system"), (2, None, "shadow", "system"), (3, None, "shadow", "system")]
    assert trail[3:] == [
        (2, "shadow", "canary", "gate"), (2, "canary", "shadow", "canary"), (2, "shadow", "canary", "gate"),
        (2, "canary", "champion", "canary"), (1, "champion", "retired", "canary"),
        (3, "shadow", "champion", "operator"), (2, "champion", "retired", "operator"),
        (3, "champion", "retired", "drift"), (2, "retired", "champion", "drift"),
        (2, "champion", "retired", "system"), (1, "retired", "champion", "system"),
    ]
    reasons = [h.reason for h in reg.history("m", 1)]
    assert reasons[-1] == "rollback from v2: again" and "superseded by v2: canary window passed" in reasons


def test_state_survives_a_restart(new_store):
    reg = ModelRegistry(new_store(), KEY)
    reg.register("m", {"a": 1}, spec="logreg", stage="champion")
    reg.register("m", {"a": 2}, spec="hat")
    reg.promote("m", 2, "gate")
    again = ModelRegistry(new_store(), KEY)  # a new process on the same store
    assert again.champion("m").version == 2 and again.previous_champion("m").version == 1
    assert again.history("m") == reg.history("m")
    assert again.load("m", 2) == {"a": 2}
    assert again.register("m", {"a": 3}, spec="arf").version == 3


def test_open_registry_follows_settings(infra, tmp_path):
    key = "k-" + uuid.uuid4().hex
    on_disk = Settings(registry_url=f"file://{tmp_path}/models", artifact_key=key)
    open_registry(on_disk).register("m", {"x": 1}, spec="logreg")
    assert (tmp_path / "models" / "m" / "index.json").exists()
    in_redis = Settings(redis_url=infra.redis_url, redis_prefix=f"o{uuid.uuid4().hex[:8]}", artifact_key=key)
    a = open_registry(in_redis)
    assert isinstance(a.store, RedisStore)
    a.register("m", {"x": 2}, spec="logreg")
    assert open_registry(in_redis).load("m", 1) == {"x": 2}
    with pytest.raises(RegistryError, match="unsupported registry url"):
        open_registry(Settings(registry_url="s3://bucket/models"))


def _tamper(reg: ModelRegistry, name: str, version: int, blob: bytes) -> None:
    """Overwrite an artifact behind the registry's back (an attacker with store access)."""
    art = reg.get(name, version).artifact
    if isinstance(reg.store, RedisStore):
        reg.store.r.set(reg.store._art(name, art), blob)
    else:
        reg.store._path(name, f"{art}.sla").write_bytes(blob)


class _Exploit:
    """Unpickling this runs code: the test proves loading never gets that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_unsigned_foreign_or_swapped_artifacts_are_refused(reg, tmp_path):
    reg.register("m", {"w": [1.0, 2.0]}, spec="logreg", stage="champion")
    reg.register("m", {"w": [3.0]}, spec="logreg")
    good1 = reg.store.get_artifact("m", reg.get("m", 1).artifact)
    good2 = reg.store.get_artifact("m", reg.get("m", 2).artifact)
    _tamper(reg, "m", 1, good1[:-3] + b"xyz")  # flipped bytes
    with pytest.raises(ArtifactError, match="signature does not verify"):
        reg.load("m", 1)
    marker = tmp_path / "pwned"
    _tamper(reg, "m", 1, pickle.dumps(_Exploit(marker)))  # an unsigned pickle
    with pytest.raises(ArtifactError, match="not a signed streamlearn artifact"):
        reg.load("m", 1)
    assert not marker.exists()
    _tamper(reg, "m", 1, good2)  # validly signed, but for v2
    with pytest.raises(ArtifactError, match="signed for another model or version"):
        reg.load("m", 1)
    with pytest.raises(ArtifactError, match="signature does not verify"):
        ModelRegistry(reg.store, b"another key").load("m", 2)
    assert reg.load("m", 2) == {"w": [3.0]}


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", "/etc/passwd", "", ".hidden", "x" * 200, "a\x00b"])
def test_bad_names_never_reach_a_key_or_a_path(reg, name):
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.register(name, {}, spec="logreg")
    with pytest.raises(RegistryError, match="invalid model name"):
        reg.get(name, 1)


def test_a_tampered_index_cannot_point_loading_at_another_path(reg):
    reg.register("m", {"w": 1}, spec="logreg")
    raw = reg.store.read("m")
    evil = raw.replace(reg.get("m", 1).artifact.encode(), b"../../../../etc/passwd")
    assert reg.store.compare_and_set("m", raw, evil)
    with pytest.raises(RegistryError, match="invalid artifact key"):
        reg.load("m", 1)


def test_directory_store_refuses_symlinks_out_of_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store = DirectoryStore(tmp_path / "root")
    (store.root / "evil").symlink_to(outside, target_is_directory=True)
    reg = ModelRegistry(store, KEY)
    with pytest.raises(RegistryError, match="outside the registry root"):
        reg.register("evil", {"x": 1}, spec="logreg")
    assert list(outside.iterdir()) == []


def test_artifacts_are_write_once(reg):
    mv = reg.register("m", {"w": 1}, spec="logreg")
    with pytest.raises(RegistryError, match="write-once"):
        reg.store.put_artifact("m", mv.artifact, b"SLA1" + b"0" * 40)
    assert reg.load("m", 1) == {"w": 1}


def test_concurrent_registrations_and_stage_changes_lose_nothing(new_store):
    regs = [ModelRegistry(new_store(), KEY) for _ in range(3)]  # e.g. three workers
    regs[0].register("m", {"i": 0}, spec="logreg", stage="champion")
    errors: list[BaseException] = []

    def work(r: ModelRegistry, k: int) -> None:
        try:
            for i in range(8):
                mv = r.register("m", {"k": k, "i": i}, spec="logreg")
                r.set_stage("m", mv.version, "retired", f"worker {k}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r, k)) for k, r in enumerate(regs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = ModelRegistry(new_store(), KEY)
    versions = final.list("m")
    assert [v.version for v in versions] == list(range(1, 26))
    assert sum(v.stage == "retired" for v in versions) == 24
    assert len(final.history("m")) == 1 + 24 * 2
    assert {final.load("m", v.version)["i"] for v in versions[1:]} == set(range(8))


def test_redis_keys_live_under_the_prefix(infra):
    prefix = f"r{uuid.uuid4().hex[:8]}"
    ModelRegistry(RedisStore(infra.redis_url, prefix), KEY).register("m", {"w": 1}, spec="logreg")
    keys = sorted(k.decode() for k in redis.Redis.from_url(infra.redis_url).scan_iter(f"{prefix}:*"))
    assert keys[0].startswith(f"{prefix}:reg:m:a:v1-") and keys[1:] == [f"{prefix}:reg:m:index", f"{prefix}:reg:names"]
