"""The trips example's code: feature functions, two River regression pipelines, a demo stream.

Referenced from streamlearn.toml as ``project:<name>`` (streamlearn puts this folder on
sys.path). Feature functions are pure: they read the event (and, if stateful, their own
previous state) and nothing else, so live scoring, backtests and retraining agree.
"""

from __future__ import annotations

import math
import random
from typing import Any

from river import linear_model, optim, preprocessing, tree

from streamlearn.datasets import Item

# typical speed of each vehicle in town, km/h (also used by the generator)
SPEED_KMH = {"bike": 14.0, "scooter": 24.0, "car": 28.0}
RUSH_HOURS = (11, 12, 13, 17, 18, 19, 20)
ZONES = {"centre": 1.45, "old-town": 1.3, "harbour": 1.1, "university": 1.05, "north": 0.95,
         "south": 0.95, "industrial": 0.85, "airport": 0.9}  # zone -> congestion factor


# ------------------------------------------------------------------ feature functions
def time_of_day(event: dict[str, Any], state: None) -> dict[str, float]:
    """Hour of day (UTC, from the event time) on the unit circle, and lunch/dinner rush."""
    hour = (event["event_time"] // 3_600_000) % 24
    angle = 2 * math.pi * hour / 24
    return {"hour_sin": math.sin(angle), "hour_cos": math.cos(angle), "rush_hour": hour in RUSH_HOURS}


def expected_minutes(event: dict[str, Any], state: None) -> dict[str, float]:
    """A domain prior: the trip's distance at the vehicle's typical speed."""
    f = event["features"]
    speed = SPEED_KMH.get(f.get("vehicle"), 20.0)
    return {"expected_min": 60.0 * float(f.get("distance_km") or 0.0) / speed}


def zone_switch(event: dict[str, Any], state: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, Any]]:
    """Stateful: 1 when the courier's previous trip was in another zone (they must ride over
    first). The state, kept per courier in Redis beside the aggregates, is the last zone."""
    zone = event["features"].get("zone")
    changed = state is not None and state.get("zone") != zone
    return {"zone_switch": changed}, {"zone": zone}


# ------------------------------------------------------------------ model factories
def linear(lr: float = 0.005, l2: float = 0.0) -> Any:
    """The champion: scaled features, SGD linear regression, on a standardised target
    (durations are tens of minutes; the target scaler keeps SGD's steps sane)."""
    return preprocessing.TargetStandardScaler(
        regressor=preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(lr), l2=l2))


def tree_model(grace_period: int = 100, max_depth: int = 8, lr: float = 0.005) -> Any:
    """The challenger: an adaptive Hoeffding tree with a linear model in each leaf (on the
    same standardised target), which can split on the interactions (rain x bike, rush hour
    x centre) a single linear model only averages."""
    hat = tree.HoeffdingAdaptiveTreeRegressor(
        grace_period=grace_period, max_depth=max_depth, leaf_prediction="model",
        leaf_model=linear_model.LinearRegression(optimizer=optim.SGD(lr)), seed=42)
    return preprocessing.TargetStandardScaler(regressor=preprocessing.StandardScaler() | hat)


# ------------------------------------------------------------------ the demo stream
def generate(n: int = 3000, seed: int = 7, n_couriers: int = 60) -> list[Item]:
    """Orders dispatched to couriers, ~45 s apart, from Monday 2026-03-02 00:00 UTC.

    The duration (minutes) is preparation (items) + travel (distance at the vehicle's speed,
    slowed by the zone's congestion, rush hours and rain on two wheels, scaled by the
    courier's own pace) + a ride over when the courier changes zone + fatigue (trips in the
    last 2 hours) + noise. The label arrives at delivery; 2% of orders are cancelled (no label).
    """
    rng = random.Random(seed)
    zones = list(ZONES)
    couriers = [{"vehicle": rng.choices(list(SPEED_KMH), weights=(5, 3, 2))[0],
                 "pace": math.exp(rng.gauss(0, 0.15)),  # hidden per-courier effect
                 "home": rng.choice(zones)} for _ in range(n_couriers)]
    activity = [rng.paretovariate(2.0) for _ in range(n_couriers)]
    last_zone: dict[int, str] = {}
    recent: dict[int, list[int]] = {}  # courier -> dispatch times (ms) of the last 2 hours
    rain_by_block: dict[int, bool] = {}  # 3-hour weather blocks
    t = 1_772_409_600_000.0  # 2026-03-02T00:00:00Z
    items: list[Item] = []
    for i in range(n):
        t += rng.expovariate(1 / 45_000.0)
        now = int(t)
        hour = (now // 3_600_000) % 24
        c = rng.choices(range(n_couriers), weights=activity)[0]
        courier = couriers[c]
        zone = courier["home"] if rng.random() < 0.7 else rng.choice(zones)
        distance = round(rng.lognormvariate(math.log(3.0), 0.5) + (6.0 if zone == "airport" else 0.0), 2)
        n_items = rng.randint(1, 6)
        block = now // (3 * 3_600_000)
        if block not in rain_by_block:
            rain_by_block[block] = rng.random() < 0.3
        rain = rain_by_block[block]
        congestion = ZONES[zone] * (1.35 if hour in RUSH_HOURS else 0.8 if hour < 6 else 1.0)
        wet = (1.3 if courier["vehicle"] != "car" else 1.05) if rain else 1.0
        travel = 60.0 * distance / SPEED_KMH[courier["vehicle"]] * congestion * wet * courier["pace"]
        recent[c] = [s for s in recent.get(c, []) if now - s < 7_200_000]
        ride_over = 6.0 if c in last_zone and last_zone[c] != zone else 0.0
        duration = 4.0 + 0.8 * n_items + travel + ride_over + 0.8 * len(recent[c]) + rng.gauss(0, 2.0)
        duration = round(max(duration, 3.0), 2)
        recent[c].append(now)
        last_zone[c] = zone
        event = {"event_id": f"trip-{seed}-{i}", "entity": f"courier-{c}", "event_time": now,
                 "features": {"distance_km": distance, "items": n_items, "zone": zone,
                              "vehicle": courier["vehicle"], "rain": rain}}
        if rng.random() < 0.02:
            items.append(Item(event, None, None))
        else:
            items.append(Item(event, duration, now + int(duration * 60_000)))
    return items
