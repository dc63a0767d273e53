"""The batch retrainer's training side: archive -> point-in-time training set -> sklearn fit
-> held-out evaluation -> a River-compatible model with its lineage, signed.

Windows (event time): examples in ``[train_from, cutoff)`` whose label was known at the
cutoff train the model; examples in ``[cutoff, eval_to)`` with a label evaluate it (a
*later* window, so the reported metric is an honest forecast). Fitting is out-of-core:
:class:`~streamlearn.replay.retrain.training.ChunkSpill` chunks, ``StandardScaler.partial_fit``
then ``SGDClassifier.partial_fit`` per chunk for a few epochs; ``hgb``
(HistGradientBoosting) loads the training set in memory and refuses above
``max_in_memory_rows``.

Output, in ``<out>/<model id>/`` (the model id is a hash of the inputs, so the same
archive files, windows and parameters give the same id):

* ``model.sla`` -- a signed artifact (:mod:`streamlearn.models.artifacts`, the settings'
  HMAC key) of ``{"format", "model_id", "spec", "model"}``, ``model`` a
  :class:`~streamlearn.models.estimators.batch.BatchClassifier`. Load it with
  :func:`load_batch_model`; ``ModelSet.add_challenger(spec, reason, model=model)`` serves
  it in shadow through the same scoring path as the River models;
* ``lineage.json`` -- archive files used (path, sha256, offsets), windows, parameters,
  data counts, held-out and training metrics, the artifact's sha256.

With a registry (:mod:`streamlearn.models.registry.versions`), the model is registered as a new
``shadow`` version of a model name (parent: its current champion) with the same lineage
(``trained_on``), params and held-out metrics: a challenger for the promotion gate.
Loading it from the registry and adding it to a worker's ModelSet is the lifecycle
integration's step; :func:`streamlearn.replay.retrain.challenge.gate_on_archive` runs the same
gate offline on archived history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import streamlearn
from streamlearn.featurestore.definitions import FeatureView, get_view
from streamlearn.formats import iso
from streamlearn.formats import jsonable as _jsonable
from streamlearn.models import artifacts
from streamlearn.models.estimators.batch import BatchClassifier
from streamlearn.models.registry.versions import ModelRegistry, ModelVersion
from streamlearn.models.task import Task
from streamlearn.replay.archive.reader import Archive, read_own_topics, refused_note
from streamlearn.replay.retrain.training import ChunkSpill, Vocabulary, examples, label_index

log = logging.getLogger(__name__)

FORMAT = "streamlearn-batch-model/1"
SEED = 42
ESTIMATORS = ("sgd", "hgb")


@dataclass(frozen=True)
class RetrainConfig:
    view: str = "entity_v1"
    estimator: str = "sgd"
    train_from: int | None = None  # default: the archive's first event
    cutoff: int | None = None  # default: 80% into the archive's event-time span
    eval_to: int | None = None  # default: after the archive's last event
    chunk_size: int = 5000
    epochs: int = 3
    alpha: float = 1e-4  # SGD L2 strength
    max_in_memory_rows: int = 1_000_000  # hgb only
    threads: int | None = None  # OpenMP/BLAS threads while fitting (None: all cores; 1 on a shared box)
    name: str = "batch"


@dataclass
class RetrainResult:
    model_id: str
    spec: str
    model: BatchClassifier
    lineage: dict[str, Any]
    directory: Path | None
    registered: ModelVersion | None = None  # the registry version, when registered

    @property
    def metrics(self) -> dict[str, Any]:
        return self.lineage["metrics"]["held_out"]


def _event_span(archive: Archive) -> tuple[int, int]:
    files = [m for m in archive.files("event") if m.first_event_time is not None]
    if not files:
        raise ValueError("the archive holds no events to train on")
    return min(m.first_event_time for m in files), max(m.last_event_time for m in files)


def resolve_windows(archive: Archive, cfg: RetrainConfig) -> tuple[int, int, int]:
    lo, hi = _event_span(archive)
    train_from = lo if cfg.train_from is None else cfg.train_from
    cutoff = cfg.cutoff if cfg.cutoff is not None else lo + int((hi - lo) * 0.8)
    eval_to = cfg.eval_to if cfg.eval_to is not None else hi + 1
    if not train_from < cutoff < eval_to:
        raise ValueError(f"windows must satisfy train_from < cutoff < eval_to, got {iso(train_from)}, "
                         f"{iso(cutoff)}, {iso(eval_to)}")
    return train_from, cutoff, eval_to


def _labels_array(y: np.ndarray) -> np.ndarray:
    return np.asarray(list(y))  # object array of Python labels -> a typed array sklearn likes


def _positive(classes: list[Any]) -> Any:
    for c in (True, 1):
        if c in classes:
            return c
    return classes[-1]


def _evaluate(model: Any, scaler: Any, spill: ChunkSpill, classes: list[Any]) -> dict[str, Any]:
    ys, ps = [], []
    for X, y, _ in spill.chunks():
        ys.append(_labels_array(y))
        ps.append(model.predict_proba(scaler.transform(X) if scaler is not None else X))
    if not ys:
        return {"n": 0}
    y = np.concatenate(ys)
    proba = np.vstack(ps)
    pos = _positive(classes)
    col = list(model.classes_).index(pos)
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(np.sum(y == pos))}
    out["accuracy"] = float(accuracy_score(y, model.classes_[proba.argmax(axis=1)]))
    out["log_loss"] = float(log_loss(y, proba, labels=model.classes_))
    out["roc_auc"] = float(roc_auc_score(y == pos, proba[:, col])) if 0 < out["positives"] < len(y) else None
    return out


def retrain(archive: Archive | str | Path, cfg: RetrainConfig, out: Path | None, artifact_key: bytes,
            workdir: Path | None = None, registry: ModelRegistry | None = None,
            register_as: str | None = None, view: FeatureView | None = None, task: Any = None) -> RetrainResult:
    """Fit, evaluate, write ``out/<id>/`` (if ``out``) and register as a shadow challenger of
    ``register_as`` in ``registry`` (if given), parented on that name's current champion.
    ``task``: the project's; labels the worker's check refuses for it are skipped and counted
    (None: every decoded label is used)."""
    if cfg.estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {cfg.estimator!r}; known: {', '.join(ESTIMATORS)}")
    view = view or get_view(cfg.view)  # a project's view object, or a built-in one by name
    if not isinstance(archive, Archive):
        archive = Archive.open(archive)
    train_from, cutoff, eval_to = resolve_windows(archive, cfg)
    refused: Counter = Counter()
    labels = label_index(archive, None if task is None else Task.parse(task), refused)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="retrain-") as tmp:
        vocab = Vocabulary()
        train = ChunkSpill(Path(tmp) / "train", vocab, cfg.chunk_size)
        held = ChunkSpill(Path(tmp) / "eval", vocab, cfg.chunk_size)
        skipped = {"unlabeled": 0, "label_after_cutoff": 0}
        for ex in examples(archive, view, labels, train_from, eval_to):
            if ex.y is None:
                skipped["unlabeled"] += 1
            elif ex.event_time < cutoff:
                if ex.label_time is not None and ex.label_time > cutoff:
                    skipped["label_after_cutoff"] += 1  # not known at the training horizon
                else:
                    train.add(ex)
            else:
                held.add(ex)
        classes = sorted(train.label_counts, key=lambda c: (str(type(c)), c))
        if len(classes) < 2:
            raise ValueError(f"the training window {iso(train_from)} .. {iso(cutoff)} has "
                             f"{train.rows} labeled example(s) of {len(classes)} class(es); need two classes")
        with threadpool_limits(limits=cfg.threads):  # OpenMP spins badly on a busy, shared machine
            model, scaler, params = _fit(cfg, train, classes)
            metrics = {"held_out": _evaluate(model, scaler, held, classes),
                       "train": _evaluate(model, scaler, train, classes)}
        data = {"train_examples": train.rows, "held_out_examples": held.rows, "features": len(vocab.index),
                "train_label_counts": {str(k): v for k, v in train.label_counts.items()},
                "held_out_label_counts": {str(k): v for k, v in held.label_counts.items()}, **skipped,
                "labels_refused": sum(refused.values()), "labels_refused_reasons": dict(refused.most_common(20))}
    files = [{"path": m.path, "sha256": m.sha256, "kind": m.kind, "topic": m.topic, "partition": m.partition,
              "first_offset": m.first_offset, "last_offset": m.last_offset, "records": m.record_count}
             for m in archive.files() if m.kind in ("event", "feedback")]
    inputs = {"files": sorted(f["sha256"] for f in files), "config": asdict(cfg),
              "windows": [train_from, cutoff, eval_to], "params": params}
    model_id = f"{cfg.name}-" + hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()
                                               ).hexdigest()[:12]
    spec = f"batch:{model_id}"
    wrapped = BatchClassifier(model, scaler, vocab.names, model_id)
    lineage: dict[str, Any] = {
        "format": FORMAT, "model_id": model_id, "spec": spec, "estimator": cfg.estimator, "params": params,
        "config": asdict(cfg), "view": {"name": view.name, "version": view.version,
                                        "fingerprint": view.fingerprint},
        "windows": {"train_from": train_from, "cutoff": cutoff, "eval_to": eval_to,
                    "train_from_iso": iso(train_from), "cutoff_iso": iso(cutoff), "eval_to_iso": iso(eval_to),
                    "labels": "training labels must be known at the cutoff (label_time <= cutoff)"},
        "archive": {"location": str(getattr(archive.storage, "root", "")), "files": files,
                    "problems": [str(p) for p in archive.problems]},
        "data": data, "metrics": metrics, "features": vocab.names,
        "created_at": iso(int(time.time() * 1000)), "code": {"streamlearn": streamlearn.__version__},
    }
    directory = None
    if out is not None:
        directory = Path(out) / model_id
        directory.mkdir(parents=True, exist_ok=True)
        blob = artifacts.sign({"format": FORMAT, "model_id": model_id, "spec": spec, "model": wrapped}, artifact_key)
        (directory / "model.sla").write_bytes(blob)
        lineage["artifact"] = {"file": "model.sla", "sha256": hashlib.sha256(blob).hexdigest(),
                               "signed": "HMAC-SHA256 with the settings' artifact_key (models/artifacts.py)"}
        (directory / "lineage.json").write_text(json.dumps(lineage, indent=1, sort_keys=True, default=str) + "\n")
    registered = None
    if registry is not None:
        if not register_as:
            raise ValueError("registering needs a model name (register_as)")
        champion = registry.champion(register_as)
        registered = registry.register(
            register_as, wrapped, spec=spec, parent=champion.version if champion else None,
            trained_on=trained_on(lineage), params=params,
            metrics={f"held_out_{k}": v for k, v in metrics["held_out"].items() if isinstance(v, (int, float))},
            stage="shadow", reason=f"batch retrain {model_id}", by="retrainer")
    return RetrainResult(model_id, spec, wrapped, lineage, directory, registered)


def trained_on(lineage: dict[str, Any]) -> dict[str, Any]:
    """The registry's lineage record: archive range, the files (by hash) and the windows."""
    return {"archive": lineage["archive"]["location"], "model_id": lineage["model_id"],
            "windows": lineage["windows"], "view": lineage["view"], "estimator": lineage["estimator"],
            "data": lineage["data"],
            "files": [{k: f[k] for k in ("path", "sha256", "first_offset", "last_offset")}
                      for f in lineage["archive"]["files"]],
            "archive_problems": lineage["archive"]["problems"]}


def _fit(cfg: RetrainConfig, train: ChunkSpill, classes: list[Any]) -> tuple[Any, Any, dict[str, Any]]:
    if cfg.estimator == "hgb":
        if train.rows > cfg.max_in_memory_rows:
            raise ValueError(f"{train.rows} training rows exceed max_in_memory_rows={cfg.max_in_memory_rows} "
                             "for hgb; use --estimator sgd (out-of-core) or a shorter window")
        parts = list(train.chunks())
        X = np.vstack([p[0] for p in parts])
        y = _labels_array(np.concatenate([p[1] for p in parts]))
        model = HistGradientBoostingClassifier(random_state=SEED).fit(X, y)
        return model, None, _jsonable(model.get_params())
    scaler = StandardScaler()
    for X, _, _ in train.chunks():
        scaler.partial_fit(X)
    model = SGDClassifier(loss="log_loss", alpha=cfg.alpha, random_state=SEED)
    classes_arr = np.asarray(classes)
    for _ in range(cfg.epochs):
        for X, y, _ in train.chunks():
            model.partial_fit(scaler.transform(X), _labels_array(y), classes=classes_arr)
    params = _jsonable(model.get_params())
    params.update(epochs=cfg.epochs, chunk_size=cfg.chunk_size)
    return model, scaler, params


def load_batch_model(path: str | Path, key: bytes) -> tuple[str, BatchClassifier]:
    """(spec, model) from a ``model.sla``; refuses a tampered or foreign artifact."""
    obj = artifacts.load(Path(path).read_bytes(), key)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise artifacts.ArtifactError(f"{path}: not a {FORMAT} artifact")
    return obj["spec"], obj["model"]


def format_result(r: RetrainResult) -> str:
    m, d, w = r.metrics, r.lineage["data"], r.lineage["windows"]
    fmt = {k: (f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)) for k, v in m.items()}
    lines = [f"retrained {r.model_id} ({r.lineage['estimator']}, view {r.lineage['view']['name']})",
             f"  train {w['train_from_iso']} .. {w['cutoff_iso']}: {d['train_examples']} examples "
             f"({d['label_after_cutoff']} with labels after the cutoff left out, {d['unlabeled']} unlabeled)",
             f"  held out {w['cutoff_iso']} .. {w['eval_to_iso']}: {d['held_out_examples']} examples: "
             + ", ".join(f"{k}={v}" for k, v in fmt.items())]
    if note := refused_note(Counter(d.get("labels_refused_reasons", {})), d.get("labels_refused", 0)):
        lines.append(f"  {note}")
    if r.lineage["archive"]["problems"]:
        lines.append(f"  {len(r.lineage['archive']['problems'])} archive problem(s), first: "
                     f"{r.lineage['archive']['problems'][0]}")
    if r.directory:
        lines.append(f"  wrote {r.directory}/model.sla and lineage.json")
    if r.registered:
        lines.append(f"  registered {r.registered.name} v{r.registered.version} ({r.registered.stage}, "
                     f"parent {r.registered.parent})")
    return "\n".join(lines)


def scheduled_retrain(settings: Any) -> int:
    """The worker's scheduled retrain: fit from the archive, register as a shadow version of
    the worker's model name, return that version (the worker then adopts it as a challenger)."""
    from streamlearn.models.registry import open_registry
    from streamlearn.project import project_for

    s = settings
    project = project_for(s)
    if not project.task.is_classification:
        raise ValueError(f"batch retraining fits classifiers; the {project.task.kind} task is not supported yet")
    archive = Archive.open(s.archive_dir)
    # several deployments can archive into one directory: train on this one's topics only
    read_own_topics(archive, s, s.archive_dir, say=lambda m: log.info("batch retrain: %s", m))
    result = retrain(archive, RetrainConfig(view=project.view.name, estimator=s.retrain_estimator, threads=1),
                     None, s.artifact_key.get_secret_value().encode(), registry=open_registry(s),
                     register_as=s.model_name, view=project.view, task=project.task)
    assert result.registered is not None
    log.info("batch retrain registered %s v%d: held-out %s", s.model_name, result.registered.version, result.metrics)
    return result.registered.version
