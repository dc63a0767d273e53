"""Anytime-valid confidence sequences for the mean of bounded observations.

The promotion gate and the canary look at a comparison after *every* labeled event.
A fixed-sample test (t-test, z-test) checked again and again will eventually cross its
threshold by chance (law of the iterated logarithm), so they need a bound that holds
at all times simultaneously. This module implements the predictable plug-in
empirical-Bernstein confidence sequence (PrPl-EB) of Waudby-Smith & Ramdas (2024,
"Estimating means of bounded random variables by betting", Thm. 2; the
empirical-Bernstein boundary of Howard et al. 2021). For observations ``X_i`` in
``[0, 1]`` and any predictable ``lambda_i`` in ``[0, 1)``::

    M_t = prod_i exp(lambda_i (X_i - mu) - (X_i - mu_hat_{i-1})^2 (-log(1 - lambda_i) - lambda_i))

is a non-negative supermartingale whenever ``E[X_i | past] <= mu`` (Fan et al.'s
inequality ``exp(l*z - z^2 (-log(1-l) - l)) <= 1 + l*z`` for ``z >= -1``), so by Ville's
inequality ``P(exists t: M_t >= 1/alpha) <= alpha``. Inverting ``M_t < 1/alpha`` gives
the one-sided lower bound::

    LCB_t = (sum lambda_i X_i - sum psi_i - log(1/alpha)) / sum lambda_i

Why this and not a normal-mixture SPRT: the mSPRT's guarantee needs Gaussian data with
a known variance (or a sub-Gaussian scale, which for a loss difference bounded by ``B``
is ``B`` itself and makes it needlessly slow), while this bound is exactly valid for any
bounded distribution, adapts to the observed variance, and stays valid if the mean
drifts over time as long as it stays at or below ``mu`` (a composite null).

>>> cs = ConfidenceSequence(alpha=0.05)
>>> lcb = cs.update_many([1.0, 0.0] * 200)  # mean 0.5
>>> 0.3 < lcb < 0.5
True
>>> cs.n
400
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: cap on the bet size; W-S&R use 1/2 or 3/4. Larger reacts faster but pays more variance.
LAMBDA_CAP = 0.5


@dataclass
class CSState:
    """Running sums of one (or, with arrays, many parallel) confidence sequences."""

    n: int = 0
    sum_x: float | np.ndarray = 0.0  # sum of X_i
    sum_dev: float | np.ndarray = 0.0  # sum of (X_i - mu_hat_i)^2, for the variance estimate
    sum_lx: float | np.ndarray = 0.0  # sum of lambda_i X_i
    sum_l: float | np.ndarray = 0.0  # sum of lambda_i
    sum_psi: float | np.ndarray = 0.0  # sum of the variance penalties


def advance(state: CSState, x: np.ndarray, alpha: float, cap: float = LAMBDA_CAP) -> tuple[np.ndarray, CSState]:
    """Feed ``x`` (shape ``(..., T)``, values in [0, 1]) to the sequence(s) in ``state``.

    Returns the lower bound after each observation (same shape as ``x``) and the new
    state. Leading dimensions are independent sequences (the simulations run thousands
    at once); a scalar state broadcasts. This is the only implementation: the
    incremental class below calls it too.
    """
    x = np.asarray(x, dtype=float)
    if x.shape[-1] == 0:
        return np.empty_like(x), state
    if np.any(x < 0.0) or np.any(x > 1.0):
        raise ValueError("confidence-sequence observations must lie in [0, 1]")
    log_inv = math.log(1.0 / alpha)
    i = state.n + np.arange(1, x.shape[-1] + 1, dtype=float)  # global 1-based index
    cs_x = np.asarray(state.sum_x)[..., None] + np.cumsum(x, axis=-1)
    mu_prev = (0.5 + cs_x - x) / i  # predictable mean estimate (prior 1/2 with weight 1)
    mu_cur = (0.5 + cs_x) / (i + 1.0)
    dev = (x - mu_cur) ** 2
    cs_dev = np.asarray(state.sum_dev)[..., None] + np.cumsum(dev, axis=-1)
    var_prev = (0.25 + cs_dev - dev) / i  # predictable variance estimate (prior 1/4)
    lam = np.minimum(np.sqrt(2.0 * log_inv / (var_prev * i * np.log1p(i))), cap)
    psi = (x - mu_prev) ** 2 * (-np.log1p(-lam) - lam)
    cs_lx = np.asarray(state.sum_lx)[..., None] + np.cumsum(lam * x, axis=-1)
    cs_l = np.asarray(state.sum_l)[..., None] + np.cumsum(lam, axis=-1)
    cs_psi = np.asarray(state.sum_psi)[..., None] + np.cumsum(psi, axis=-1)
    lcb = (cs_lx - cs_psi - log_inv) / cs_l
    new = CSState(
        n=state.n + x.shape[-1],
        sum_x=_last(cs_x), sum_dev=_last(cs_dev), sum_lx=_last(cs_lx), sum_l=_last(cs_l), sum_psi=_last(cs_psi),
    )
    return lcb, new


def _last(a: np.ndarray) -> float | np.ndarray:
    v = a[..., -1]
    return float(v) if v.ndim == 0 else v.copy()


class ConfidenceSequence:
    """A one-sided (lower) anytime-valid bound on the mean of observations in [0, 1].

    Plain floats inside, so it pickles into a checkpoint. ``lower_bound`` is the running
    maximum of the per-event bounds (the intersection of the sequence over time, which
    keeps the same guarantee), so a batch update sees a crossing that happened at any
    event inside the batch, exactly as if it had been checked after every event. It is
    ``-inf`` before any observation.
    """

    def __init__(self, alpha: float, cap: float = LAMBDA_CAP) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        self.alpha = alpha
        self.cap = cap
        self.state = CSState()
        self.lower_bound = -math.inf

    @property
    def n(self) -> int:
        return self.state.n

    @property
    def mean(self) -> float:
        return self.state.sum_x / self.state.n if self.state.n else math.nan

    def update(self, x: float) -> float:
        """One observation: :func:`advance` for ``T = 1``, in plain floats (~1 us instead of ~30)."""
        if not 0.0 <= x <= 1.0:
            raise ValueError("confidence-sequence observations must lie in [0, 1]")
        st, log_inv = self.state, math.log(1.0 / self.alpha)
        i = st.n + 1
        mu_prev = (0.5 + st.sum_x) / i
        var_prev = (0.25 + st.sum_dev) / i
        lam = min(math.sqrt(2.0 * log_inv / (var_prev * i * math.log1p(i))), self.cap)
        sum_x = st.sum_x + x
        sum_lx, sum_l = st.sum_lx + lam * x, st.sum_l + lam
        sum_psi = st.sum_psi + (x - mu_prev) ** 2 * (-math.log1p(-lam) - lam)
        self.state = CSState(i, sum_x, st.sum_dev + (x - (0.5 + sum_x) / (i + 1.0)) ** 2, sum_lx, sum_l, sum_psi)
        self.lower_bound = max(self.lower_bound, (sum_lx - sum_psi - log_inv) / sum_l)
        return self.lower_bound

    def update_many(self, xs: Sequence[float] | np.ndarray) -> float:
        lcb, self.state = advance(self.state, np.asarray(xs, dtype=float), self.alpha, self.cap)
        if lcb.size:
            self.lower_bound = max(self.lower_bound, float(lcb.max()))
        return self.lower_bound
