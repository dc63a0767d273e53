"""Storage backends for online state: one small interface, two implementations.

The loop needs only batch-shaped operations: read many keys in one round trip, and
apply a set of writes atomically (so a crash never leaves an entity's state updated
without the served feature vector that came from it). Redis is the online store; the
in-memory backend serves backtests and batch jobs that replay history in-process.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import redis.exceptions

INF = float("inf")


@dataclass
class WriteBatch:
    """Writes applied together, all or nothing."""

    # key -> (value, ttl s; 0 = none; negative: only if the key is absent, with ttl -ttl)
    sets: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    appends: dict[str, list[bytes]] = field(default_factory=dict)  # list key -> values to push
    trims: dict[str, int] = field(default_factory=dict)  # list key -> number of leading items to drop
    getdels: list[str] = field(default_factory=list)  # read and delete, in the same transaction
    # (key, token): apply at most once per token, even when retried after a lost reply (a Redis
    # stopped mid-write executes it but never answers; the client retries). Writers sharing a
    # receipt key must not overlap (the loop's lock serialises them).
    receipt: tuple[str, str] | None = None

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self.sets[key] = (value, ttl)

    def set_if_absent(self, key: str, value: bytes, ttl: int) -> None:
        """Set ``key`` (expiring after ``ttl`` > 0 seconds) unless it exists: the first writer
        wins (two workers serving one event during a rebalance keep the first record)."""
        if ttl <= 0:
            raise ValueError("set_if_absent needs a positive ttl")
        self.sets[key] = (value, -ttl)

    def append(self, key: str, value: bytes) -> None:
        self.appends.setdefault(key, []).append(value)

    def __bool__(self) -> bool:
        return bool(self.sets or self.deletes or self.appends or self.trims or self.getdels)


class Backend(ABC):
    #: errors that mean "the store is unreachable right now": callers retry, never crash
    transient_errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, OSError)
    #: whether the loop tags each write with a receipt, so a write retried after a lost answer
    #: (a store stopped mid-write) is applied at most once
    needs_receipts: bool = True
    #: the online loop may read and write this backend directly, synchronously (``moment``,
    #: ``get``/``get_all``, ``put``, ``take``, ``apply``): only an in-process replay's memory
    #: backend that keeps objects (:class:`MemoryBackend`)
    direct: bool = False

    @abstractmethod
    async def read_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    @abstractmethod
    async def write_batch(self, batch: WriteBatch) -> dict[str, bytes | None]:
        """Apply atomically; returns the values of ``batch.getdels`` as they were."""

    @abstractmethod
    async def park_unless_present(self, items: Sequence[tuple[str, bytes, int, str]]) -> list[bytes | None]:
        """For each (key, value, ttl, guard): atomically, if ``guard`` exists return its value;
        otherwise set ``key`` and return None. Closes the race between a label being parked
        and its event being served by another process."""

    @abstractmethod
    async def read_list(self, key: str) -> list[bytes]: ...

    @abstractmethod
    async def read_with_ttl(self, keys: Sequence[str]) -> list[tuple[bytes | None, float]]:
        """Each key's value and the seconds it has left (``inf``: no expiry; 0 if absent)."""

    @abstractmethod
    async def ping(self) -> bool: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis is a dependency, but redis-py runs without it
    _hiredis_pack = None
_UTF8 = ("utf-8", "utf8", "UTF-8")


class _LinearPack:
    """redis-py's asyncio ``pack_command`` re-joins its growing buffer once per argument (up to
    6 kB each time): quadratic in a command's size, ~3x the cost of a plain join for the loop's
    scripts of a few hundred arguments. This builds the same bytes in one join. Arguments other
    than bytes, str and int go through the client's own encoder (its floats, its errors)."""

    def pack_command(self, *args):  # noqa: ANN201 - redis-py's signature
        if isinstance(args[0], str):  # "CONFIG GET": the server wants the words apart
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        encoding, errors = self.encoder.encoding, self.encoder.encoding_errors
        if _hiredis_pack is not None and encoding in _UTF8 and errors == "strict":
            # hiredis' C packer, ~2x faster: the same bytes for bytes, str (as UTF-8), int and
            # float (its repr, as redis-py's encoder) arguments; it refuses anything else (bool,
            # int subclasses, memoryview) and a str UTF-8 cannot encode: those are packed below
            try:
                return [_hiredis_pack(args)]
            except (TypeError, UnicodeError):
                pass
        out = [b"*%d\r\n" % len(args)]
        append = out.append
        for arg in args:
            t = type(arg)
            if t is bytes:
                pass
            elif t is str:
                arg = arg.encode(encoding, errors)
            elif t is int:
                arg = b"%d" % arg
            else:
                arg = self.encoder.encode(arg)
            append(b"$%d\r\n%b\r\n" % (len(arg), arg))  # one piece per argument (a loop's are small)
        return [b"".join(out)]


class _SendWithoutTask:
    """redis-py bounds each write with ``asyncio.wait_for`` (a socket timeout is set by
    default), which creates a Task per command: ~7% of the worker's CPU per event. The same
    bound with ``asyncio.timeout`` creates none. Everything else (connecting, health checks,
    the errors raised and the disconnect on failure) is redis-py's own."""

    async def send_packed_command(self, command, check_health: bool = True) -> None:  # noqa: ANN001
        timeout = self.socket_timeout
        if not timeout or not self.is_connected:
            return await super().send_packed_command(command, check_health)
        if check_health:
            await self.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            async with asyncio.timeout(timeout):
                self._writer.writelines(command)
                await self._writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else (e.args[0], e.args[1])
            raise redis.exceptions.ConnectionError(
                f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            await self.disconnect(nowait=True)
            raise


def _linear_pack(client: aioredis.Redis) -> aioredis.Redis:
    """The client with its connections' ``pack_command`` and write path replaced by
    :class:`_LinearPack`'s and :class:`_SendWithoutTask`'s (whatever connection class its
    URL chose: TCP, TLS, Unix socket)."""
    pool = client.connection_pool
    base = pool.connection_class
    if not issubclass(base, _LinearPack):
        pool.connection_class = type(f"Fast{base.__name__}", (_LinearPack, _SendWithoutTask, base), {})
    return client


class RedisBackend(Backend):
    """Redis (or Valkey). Atomic batches are MULTI/EXEC pipelines: one round trip each."""

    transient_errors = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        ConnectionError,
        TimeoutError,
        OSError,
    )

    def __init__(self, url: str, **kwargs) -> None:
        self.url = url
        self.client = _linear_pack(aioredis.Redis.from_url(url, **kwargs))
        self._write_script = self.client.register_script(self._WRITE_ONCE)
        self._park_script = self.client.register_script(self._PARK)  # EVALSHA: the body is not resent

    async def read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return await self.client.mget(keys)

    _PARK = """
    local out = {}
    for i = 1, #KEYS, 2 do
      local served = redis.call('GET', KEYS[i + 1])
      if served then out[#out + 1] = served
      else redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[i + 1]); out[#out + 1] = false end
    end
    return out
    """

    async def park_unless_present(self, items: Sequence[tuple[str, bytes, int, str]]) -> list[bytes | None]:
        if not items:
            return []
        keys: list[str] = []
        args: list[bytes | int] = []
        for key, value, ttl, guard in items:
            keys += [key, guard]
            args += [value, ttl]
        out = await self._park_script(keys=keys, args=args)
        return [v or None for v in out]

    # A batch with a receipt, as one script (atomic like MULTI): if the receipt already holds
    # this token the batch was applied and only its GETDEL results are returned again.
    # KEYS: receipt, getdels, sets, deletes, appends, trims. ARGV: token, receipt ttl, the five
    # counts, then (value, ttl) per set, (count, values...) per append, n per trim.
    _WRITE_ONCE = """
    local r, token = KEYS[1], ARGV[1]
    local ng, ns, nd, na, nt = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
                               tonumber(ARGV[6]), tonumber(ARGV[7])
    local out = {}
    if redis.call('HGET', r, 't') == token then
      for i = 1, ng do out[i] = redis.call('HGET', r, tostring(i)) end
      return out
    end
    redis.call('DEL', r)
    local k, a = 2, 8
    for i = 1, ng do
      local v = redis.call('GETDEL', KEYS[k])
      out[i] = v
      if v then redis.call('HSET', r, tostring(i), v) end
      k = k + 1
    end
    for i = 1, ns do
      local ttl = tonumber(ARGV[a + 1])
      if ttl > 0 then redis.call('SET', KEYS[k], ARGV[a], 'EX', ttl)
      elseif ttl < 0 then redis.call('SET', KEYS[k], ARGV[a], 'EX', -ttl, 'NX')
      else redis.call('SET', KEYS[k], ARGV[a]) end
      k, a = k + 1, a + 2
    end
    for i = 1, nd do redis.call('DEL', KEYS[k]); k = k + 1 end
    for i = 1, na do
      local c = tonumber(ARGV[a]); a = a + 1
      for j = a, a + c - 1, 1000 do redis.call('RPUSH', KEYS[k], unpack(ARGV, j, math.min(j + 999, a + c - 1))) end
      k, a = k + 1, a + c
    end
    for i = 1, nt do redis.call('LTRIM', KEYS[k], tonumber(ARGV[a]), -1); k, a = k + 1, a + 1 end
    redis.call('HSET', r, 't', token)
    redis.call('EXPIRE', r, tonumber(ARGV[2]))
    return out
    """
    RECEIPT_TTL_S = 7 * 86400

    async def _write_once(self, batch: WriteBatch) -> dict[str, bytes | None]:
        assert batch.receipt is not None
        rkey, token = batch.receipt
        keys = [rkey, *batch.getdels, *batch.sets, *batch.deletes, *batch.appends, *batch.trims]
        args: list[bytes | str | int] = [token, self.RECEIPT_TTL_S, len(batch.getdels), len(batch.sets),
                                         len(batch.deletes), len(batch.appends), len(batch.trims)]
        for value, ttl in batch.sets.values():
            args += [value, ttl]
        for values in batch.appends.values():
            args += [len(values), *values]
        args += list(batch.trims.values())
        out = await self._write_script(keys=keys, args=args)
        return {k: v or None for k, v in zip(batch.getdels, out + [None] * len(batch.getdels))}

    async def write_batch(self, batch: WriteBatch) -> dict[str, bytes | None]:
        if not batch:
            return {}
        if batch.receipt is not None:
            return await self._write_once(batch)
        pipe = self.client.pipeline(transaction=True)
        for key in batch.getdels:
            pipe.getdel(key)
        for key, (value, ttl) in batch.sets.items():
            pipe.set(key, value, ex=abs(ttl) or None, nx=ttl < 0)  # ttl 0: no expiry; < 0: if absent
        if batch.deletes:
            pipe.delete(*batch.deletes)
        for key, values in batch.appends.items():
            pipe.rpush(key, *values)
        for key, n in batch.trims.items():
            pipe.ltrim(key, n, -1)
        results = await pipe.execute()
        return dict(zip(batch.getdels, results[: len(batch.getdels)]))

    async def read_list(self, key: str) -> list[bytes]:
        return await self.client.lrange(key, 0, -1)

    async def read_with_ttl(self, keys: Sequence[str]) -> list[tuple[bytes | None, float]]:
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=True)  # one round trip, one moment
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        got = await pipe.execute()
        return [(v, INF if ms == -1 else max(0, ms) / 1000) if v is not None else (None, 0.0)
                for v, ms in zip(got[::2], got[1::2])]

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.client.aclose()


def _own(value: bytes) -> bytes:
    """A copy of exactly ``value``'s size. Kept values live as long as the backend, and some
    writers' bytes carry a much larger allocation than their length (orjson's: ~4 KB for a
    30-byte learn-log entry), which a replay would otherwise hold once per event."""
    return memoryview(value).tobytes()


class MemoryBackend(Backend):
    """In-process backend with the same semantics (TTL by wall clock, lazily enforced).

    Backtests call it a few times per event, so the common case is kept cheap: until the
    earliest deadline ever set has passed no key can have expired, and reads and writes
    skip the per-key expiry checks.

    ``keep_objects``: values may be Python objects rather than bytes, stored and returned as
    given (an in-process replay keeps served records decoded: :mod:`streamlearn.streams.loop.served`
    keeps only those its codec would give back exactly, so results are the same). The loop
    then reads and writes this backend directly (:meth:`moment`, :meth:`get`, :meth:`put`,
    :meth:`take`, :meth:`apply`) and keeps entity states as the view's objects too, so such a
    backend is the loop's own: other readers of its entity keys get objects, not JSON."""

    #: a write is applied whole or not at all, and its caller always learns which: no receipts
    needs_receipts = False

    def __init__(self, clock=time.monotonic, keep_objects: bool = False) -> None:
        self.keep_objects = keep_objects
        self._kv: dict[str, tuple[bytes, float]] = {}  # key -> (value, when it expires)
        self._lists: dict[str, list[bytes]] = {}
        self._clock = clock
        # no key expires before this: the earliest deadline ever set (a key set again
        # later only leaves it early, which is safe)
        self._none_expire_before = INF

    def _get(self, key: str, now: float) -> bytes | None:
        """``key``'s value, dropping it if it has expired (the checked path)."""
        item = self._kv.get(key)
        if item is None:
            return None
        if item[1] < now:
            del self._kv[key]
            return None
        return item[0]

    async def read_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        if now < self._none_expire_before:
            get = self._kv.get
            return [item[0] if (item := get(k)) is not None else None for k in keys]
        return [self._get(k, now) for k in keys]

    async def park_unless_present(self, items: Sequence[tuple[str, bytes, int, str]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key, value, ttl, guard in items:
            served, = await self.read_many([guard])
            if served is None:
                await self.write_batch(WriteBatch(sets={key: (value, ttl)}))
            out.append(served)
        return out

    async def write_batch(self, batch: WriteBatch) -> dict[str, bytes | None]:
        return self.apply(batch)

    @property
    def direct(self) -> bool:  # type: ignore[override]
        # a subclass may change what a read or write does: only this class is used directly
        return self.keep_objects and type(self) is MemoryBackend

    # ---------------------------------------------------------------- in-process callers
    # An in-process replay's loop (``keep_objects``) calls these directly: the same semantics
    # as read_many / write_batch, without a coroutine or a WriteBatch per call
    # (:mod:`streamlearn.streams.loop.scoring`).
    def moment(self) -> tuple[float, bool]:
        """The clock, and whether no key can have expired by then (plain dictionary reads
        are exact): read once per batch, for :meth:`get`, :meth:`put` and :meth:`take`."""
        now = self._clock()
        return now, now < self._none_expire_before

    def get(self, key: str, now: float, fresh: bool) -> bytes | None:
        """``key``'s value (``now``, ``fresh`` from :meth:`moment`)."""
        if fresh:
            item = self._kv.get(key)
            return item[0] if item is not None else None
        return self._get(key, now)

    def get_all(self, keys: Sequence[str]) -> list[bytes | None]:
        """Each key's value, read at one moment (:meth:`read_many`, called directly)."""
        now, fresh = self.moment()
        get = self.get
        out = []
        for k in keys:  # a loop, not a comprehension: replay batches hold one or two items
            out.append(get(k, now, fresh))
        return out

    def put(self, key: str, value: bytes, ttl: int, now: float) -> None:
        """Set ``key`` to ``value`` (kept as given), expiring ``ttl`` seconds after ``now``
        (0: never)."""
        if ttl > 0:
            d = now + ttl
            if d < self._none_expire_before:
                self._none_expire_before = d
        elif ttl == 0:
            d = INF
        else:
            raise ValueError("put takes a ttl >= 0")
        self._kv[key] = (value, d)

    def take(self, key: str, now: float, fresh: bool) -> bytes | None:
        """Read and delete ``key`` (GETDEL)."""
        v = self.get(key, now, fresh)
        if v is not None:
            del self._kv[key]
        return v

    def extend_list(self, key: str, values: Sequence[bytes]) -> None:
        """Append ``values`` to the list at ``key`` (as a write batch's ``appends`` does)."""
        got = self._lists.get(key)
        if got is None:
            got = self._lists[key] = []
        got += map(_own, values)

    def apply(self, batch: WriteBatch) -> dict[str, bytes | None]:
        """:meth:`write_batch`, called directly."""
        now = self._clock()
        kv = self._kv
        fresh = now < self._none_expire_before  # no key can have expired: no per-key checks
        got: dict[str, bytes | None] = {}
        if batch.getdels:  # all read, then all deleted (a key given twice reads its value twice)
            for key in batch.getdels:
                got[key] = (item[0] if (item := kv.get(key)) is not None else None) if fresh \
                    else self._get(key, now)
            for key in batch.getdels:
                kv.pop(key, None)
        earliest = self._none_expire_before
        for key, (value, ttl) in batch.sets.items():
            if ttl > 0:
                d = now + ttl
                if d < earliest:
                    earliest = d
            elif ttl == 0:
                d = INF
            else:  # only if absent (an expired key is absent)
                if key in kv and (fresh or self._get(key, now) is not None):
                    continue
                d = now - ttl
                if d < earliest:
                    earliest = d
            kv[key] = (_own(value) if value.__class__ is bytes else value, d)
        self._none_expire_before = earliest
        if batch.deletes:  # (most batches have none of these three)
            for key in batch.deletes:
                kv.pop(key, None)
                self._lists.pop(key, None)
        if batch.appends:
            for key, values in batch.appends.items():
                self.extend_list(key, values)
        if batch.trims:
            for key, n in batch.trims.items():
                del self._lists.get(key, [])[:n]
        return got

    async def read_list(self, key: str) -> list[bytes]:
        return list(self._lists.get(key, []))

    async def read_with_ttl(self, keys: Sequence[str]) -> list[tuple[bytes | None, float]]:
        now = self._clock()
        out: list[tuple[bytes | None, float]] = []
        for key in keys:
            v = self._get(key, now)
            out.append((v, self._kv[key][1] - now) if v is not None else (None, 0.0))
        return out

    async def ping(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._kv)


def backend_from_url(url: str) -> Backend:
    """``memory://`` or a ``redis://`` / ``rediss://`` / ``unix://`` URL."""
    if url.startswith("memory://"):
        return MemoryBackend()
    return RedisBackend(url)
