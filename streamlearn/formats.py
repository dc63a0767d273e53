"""Small conversions every layer shares: times (ms since the epoch <-> ISO-8601) and JSON-safe values.

>>> parse_time("2023-11-14T22:13:20Z"), parse_time("1700000000000"), parse_time(None)
(1700000000000, 1700000000000, None)
>>> iso(1700000000000)
'2023-11-14T22:13:20.000Z'
>>> jsonable({"b": b"\\x00\\x01", "x": float("nan"), "t": (1, {2})})
{'b': 'AAE=', 'x': None, 't': [1, [2]]}
"""

from __future__ import annotations

import base64
import math
import time
from datetime import UTC, datetime
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_time(value: str | int | float | datetime | None) -> int | None:
    """ms since the epoch from ms (int or digits), a ``datetime`` or an ISO-8601 string
    (naive = UTC); None for None or "". A ValueError names what was wrong."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    elif str(value).lstrip("-").isdigit():
        return int(value)
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {value!r} (use ISO-8601, e.g. 2024-05-01T00:00:00Z, "
                             "or milliseconds since the epoch)") from None
    if dt.tzinfo is None:  # naive means UTC, like event times
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def iso(ms: int | None) -> str:
    """ISO-8601 UTC with milliseconds; "" for None."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def jsonable(value: Any) -> Any:
    """A value as strict JSON can hold it: NaN/inf -> null, bytes -> base64 (standard
    alphabet), tuples and sets -> lists, keys -> str, a River ``(class, params)`` pair ->
    ``{"class", "params"}``, anything else -> its repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], type) and isinstance(value[1], dict):
        return {"class": f"{value[0].__module__}.{value[0].__qualname__}", "params": jsonable(value[1])}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return jsonable(value.item())
    return repr(value)
