"""The lifecycle's per-label path equals the label-by-label original: same drift events, in
the same order, same decisions, same pickled state."""

from __future__ import annotations

import asyncio
import pickle
import random

import numpy as np

from streamlearn import datasets
from streamlearn.models.governance.lifecycle import Lifecycle, LifecycleConfig
from streamlearn.models.modelset import ModelSet
from streamlearn.replay.backtest.inprocess import memory_models_loop, run_stream
from streamlearn.settings import Settings


class LabelByLabel(Lifecycle):
    """The original per-label path: every model set lookup per label, and every label straight
    into the label monitor as a one-row array."""

    def on_labels(self, models, items):
        for y, served, serving in items:
            self.on_label(models, y, served, serving)

    def on_label(self, models, y, served, serving):
        self._sync(models)
        champ = served.get(str(models.champion))
        if self.labels_since_promotion is not None:
            self.labels_since_promotion += 1
        sc = self.scorer
        if champ is None:
            sc.observe(y)
            return
        challengers = models.challengers()
        if challengers:
            lc = sc.loss(y, champ)
            hit_c = sc.hit(y, champ)
            for v in challengers:
                pred = served.get(str(v))
                if pred is not None:
                    self._gate(v).update(lc, sc.loss(y, pred), hit_c, sc.hit(y, pred))
        if self.canary_monitor is not None and models.canary is not None:
            arm = "canary" if serving == models.canary.version else "champion"
            pred = served.get(str(serving)) if serving is not None else None
            if pred is not None:
                self.canary_monitor.observe(arm, sc.loss(y, pred), sc.hit(y, pred))
        ev = self.concept.update(sc.error(y, champ))
        if ev is not None:
            self.drift_events.append(ev)
        pair = sc.bias_pair(y, champ)
        if pair is not None:
            bev = self.bias.update(pair[0], pair[1], champ.get("n"))
            if bev is not None:
                self.drift_events.append(bev)
        labels = self.__dict__.get("labels")
        if labels is not None and isinstance(y, (bool, int, float)):
            self.drift_events += labels.update_many(np.array([[float(y)]]))
        sc.observe(y)


def _config() -> LifecycleConfig:
    cfg = LifecycleConfig.from_settings(Settings(drift_warmup=100, drift_feature_reference=300,
                                                 drift_feature_window=150))
    assert cfg.label is not None
    return cfg


def _served(rng: random.Random, versions: list[int], t: int) -> dict:
    out = {}
    for v in versions:
        p = min(max(rng.random() * (0.3 if t < 3000 else 0.9), 0.0), 1.0)
        out[str(v)] = {"score": p, "pred": p > 0.5, "proba": {"False": 1 - p, "True": p}, "n": t}
    return out


def test_label_events_decisions_and_state_equal_the_label_by_label_path():
    rng = random.Random(1)
    models_a, models_b = ModelSet.fresh("m", "logreg"), ModelSet.fresh("m", "logreg")
    models_a.add_challenger("nb", "test")
    models_b.add_challenger("nb", "test")
    fast, ref = Lifecycle(_config()), LabelByLabel(_config())
    records_a, records_b = [], []
    for t in range(6000):
        rate = 0.05 if t < 2500 else 0.5  # the label distribution moves: the label monitor fires
        y = rng.random() < rate
        served = _served(rng, [1, 2], t)
        fast.on_label(models_a, y, served, 1)
        ref.on_label(models_b, y, served, 1)
        if t % 37 == 0:
            xs = [{"a": rng.random()} for _ in range(5)]
            fast.on_scored(xs)
            ref.on_scored(xs)
        if t % 113 == 0:
            records_a += fast.decide(models_a, t)
            records_b += ref.decide(models_b, t)
        if t % 1500 == 0:
            # a checkpoint mid-stream holds the same monitor state (its rows in other chunks)
            assert _monitor(pickle.loads(pickle.dumps(fast))) == _monitor(ref)
    records_a += fast.decide(models_a, 6000)
    records_b += ref.decide(models_b, 6000)
    assert records_a == records_b
    assert any(r.get("detector") == "label:ks" for _, r in records_a), "the label monitor never fired"
    assert _monitor(fast) == _monitor(ref)
    again = pickle.loads(pickle.dumps(fast))
    assert "_label_buf" not in again.__dict__ and _monitor(again) == _monitor(ref)


def test_batches_of_labels_equal_the_label_by_label_path():
    """on_labels over batches of any size (a challenger, then a canary, arriving between
    batches) gives the same events, decisions, gates and pickled state as label by label."""
    rng = random.Random(5)
    models_a, models_b = ModelSet.fresh("m", "logreg"), ModelSet.fresh("m", "logreg")
    fast, ref = Lifecycle(_config()), LabelByLabel(_config())
    records_a, records_b = [], []
    t = 0
    while t < 8000:
        if t >= 1000 and len(models_a.learners) == 1:
            models_a.add_challenger("nb", "test")
            models_b.add_challenger("nb", "test")
        if t >= 4000 and models_a.canary is None and 2 in models_a.learners and models_a.champion == 1:
            models_a.start_canary(2, 0.5, "test")
            models_b.start_canary(2, 0.5, "test")
        batch = []
        for _ in range(rng.choice([1, 2, 7, 64, 300])):
            rate = 0.05 if t < 3500 else 0.5
            # some labels only for the champion (a challenger that had not scored the event)
            versions = sorted(models_a.learners) if rng.random() < 0.8 else [models_a.champion]
            batch.append((rng.random() < rate, _served(rng, versions, t), rng.choice([1, 2, None])))
            t += 1
        fast.on_labels(models_a, batch)
        ref.on_labels(models_b, batch)
        if rng.random() < 0.3:
            records_a += fast.decide(models_a, t)
            records_b += ref.decide(models_b, t)
    records_a += fast.decide(models_a, t)
    records_b += ref.decide(models_b, t)
    assert records_a == records_b
    assert {r["action"] for _, r in records_a if "action" in r} and any(
        r.get("detector") == "label:ks" for _, r in records_a)
    assert _monitor(fast) == _monitor(ref)
    assert fast.gates and pickle.dumps(fast.gates) == pickle.dumps(ref.gates), "gate evidence"
    a, b = pickle.loads(pickle.dumps(fast)).__dict__, pickle.loads(pickle.dumps(ref)).__dict__
    assert list(a) == list(b)
    for k in a:  # the label monitor holds its rows in other chunks (compared by _monitor above)
        assert k == "labels" or pickle.dumps(a[k]) == pickle.dumps(b[k]), k


def _monitor(lc: Lifecycle) -> tuple:
    if type(lc) is Lifecycle:
        lc._flush_labels()
    m = lc.labels
    ref = np.concatenate(m.ref).ravel().tolist() if m.ref else []
    cur = np.concatenate(m.cur).ravel().tolist() if m.cur else []
    return m.n, m.checks, m.ref_rows, m.cur_rows, ref, cur, lc.drift_events


def test_an_in_process_run_with_the_lifecycle_is_unchanged():
    stream = list(datasets.arrival_order(datasets.cards(5000, seed=3, n_cards=300)))
    cfg = _config()
    fast = memory_models_loop("entity_v1", ["logreg", "nb"], lifecycle=cfg, clock=lambda: 0.0)
    ref = memory_models_loop("entity_v1", ["logreg", "nb"], lifecycle=cfg, clock=lambda: 0.0)
    ref.lifecycle.__class__ = LabelByLabel
    preds_a = asyncio.run(run_stream(fast, stream))
    preds_b = asyncio.run(run_stream(ref, stream))
    assert [p.record() for p in preds_a] == [p.record() for p in preds_b]
    assert list(fast.outbox) == list(ref.outbox)
    assert _monitor(fast.lifecycle) == _monitor(ref.lifecycle)
    assert fast.lifecycle.labels.n > 3000


def _old_bias_update(self, score, label, learned=None):
    """BiasMonitor.update as it was (three float conversions per label) up to a window's end
    (that part did not change), for comparison."""
    self.n += 1
    if learned is not None and learned < self.warmup:
        self.young = True
    self.count += 1
    self.sum_score += float(score)
    self.sum_label += float(label)
    r = float(score) - float(label)
    self.sum_sq += r * r
    b = self.blocks if self.blocks is not None else [0.0, 0, 0.0, 0.0, 0]
    b[0] += r
    b[1] += 1
    if b[1] == 50:
        b[2] += b[0] / 50
        b[3] += (b[0] / 50) ** 2
        b[4] += 1
        b[0], b[1] = 0.0, 0
    self.blocks = b
    assert self.count < self.window, "only called before a window's last label"
    return None


def test_bias_monitor_state_and_events_equal_the_old_update():
    from streamlearn.models.governance.drift import BiasMonitor

    rng = random.Random(2)
    new, old = BiasMonitor(window=300, alpha=0.01, warmup=50), BiasMonitor(window=300, alpha=0.01, warmup=50)
    fired = 0
    for t in range(20000):
        score = rng.random() * (0.4 if t < 9000 else 1.0)
        label = float(rng.random() < 0.2)
        a = new.update(score, label, t)
        # the window's last label: the current method (its end-of-window part is unchanged)
        b = _old_bias_update(old, score, label, t) if old.count + 1 < old.window else old.update(score, label, t)
        assert a == b and new == old
        fired += a is not None
    assert fired > 0
