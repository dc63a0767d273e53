"""How the loop serialises what it stores: served records, entity state, learn-log entries.

orjson: these are (de)serialised on every event; it is several times faster than json and
round-trips floats exactly. It writes NaN as null, so it relies on inputs being finite,
which input validation enforces (:mod:`streamlearn.schemas.validation`).
"""

from __future__ import annotations

from typing import Any

import orjson

loads = orjson.loads


def _numpy_scalar(obj: Any) -> Any:
    # a numpy scalar (an sklearn-wrapped model's label, say) as json would have written it
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_numpy_scalar)
