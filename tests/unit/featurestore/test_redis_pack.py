"""The Redis backend's command packing sends exactly the bytes redis-py's own would."""

from __future__ import annotations

import random

import pytest
import redis.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, UnixDomainSocketConnection

from streamlearn.featurestore.backend import RedisBackend, _LinearPack


class _Linear(_LinearPack, Connection):
    pass


def _wire(conn: Connection, *args) -> bytes:
    return b"".join(bytes(part) for part in conn.pack_command(*args))


# arguments over redis-py's 6,000-byte cutoff, which it sends as separate chunks: the length is
# drawn (hypothesis tries the edges 6000/6001), the bytes come from a drawn seed. st.binary(
# min_size=6000) drew them byte by byte (~430,000 draws in 300 examples: 3 of the test's 3.3 s).
BIG = st.builds(lambda n, seed: random.Random(seed).randbytes(n), st.integers(6000, 9000), st.integers(0, 2**32 - 1))
args = st.one_of(
    st.binary(max_size=300),
    BIG,
    st.text(max_size=50),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=50).map(memoryview),
    st.binary(max_size=50).map(bytearray),
)
commands = st.sampled_from(["EVALSHA", "MGET", "CONFIG GET", b"SET", b"CLIENT SETNAME"])


# made once: a connection's __init__ reads redis-py's version from the package metadata (~3 ms,
# most of the test's time when made per example); pack_command keeps no state
LINEAR, PLAIN = _Linear(), Connection()


@settings(max_examples=300, deadline=None)
@given(commands, st.lists(args, max_size=60))
def test_same_bytes_as_redis_py(command, rest):
    assert _wire(LINEAR, command, *rest) == _wire(PLAIN, command, *rest)


def test_a_scoring_write_is_byte_identical():
    keys = ["sl:v1:receipt:1"] + [f"sl:v1:p:ev-{i}" for i in range(40)] + [f"sl:v1:e:card-{i}" for i in range(40)]
    argv = ["7", 604800, 40, 40, 0, 0, 0] + [b"\x00\xff" * 90, 259200] * 40
    cmd = ("EVALSHA", "a" * 40, len(keys), *keys, *argv)
    assert _wire(_Linear(), *cmd) == _wire(Connection(), *cmd)


def test_what_redis_py_refuses_is_refused_alike():
    for bad in (True, None, object()):
        with pytest.raises(redis.exceptions.DataError):
            _Linear().pack_command("SET", "k", bad)
        with pytest.raises(redis.exceptions.DataError):
            Connection().pack_command("SET", "k", bad)


@pytest.mark.parametrize("url, base", [("redis://127.0.0.1:1/0", Connection),
                                        ("unix:///tmp/nowhere.sock", UnixDomainSocketConnection)])
def test_the_backend_keeps_the_connection_class_its_url_chose(url, base):
    cls = RedisBackend(url).client.connection_pool.connection_class
    assert issubclass(cls, _LinearPack) and issubclass(cls, base)


def test_hiredis_packs_and_what_it_refuses_is_packed_as_redis_py_packs_it():
    """Commands of bytes, str, int and float go through hiredis' C packer (when installed);
    an argument it refuses (bool-free int subclasses, memoryview, bytearray, str and bytes
    subclasses, a str UTF-8 cannot encode) is packed by our own code: the bytes or the error
    are redis-py's either way."""
    import enum

    from streamlearn.featurestore import backend

    class Num(enum.IntEnum):
        A = 7

    class S(str):
        pass

    assert backend._hiredis_pack is not None  # a dependency: the fast path is the one tested above
    cases = [("SET", "k", Num.A), ("SET", S("k"), b"v"), ("SET", "k", memoryview(b"ab")), ("SET", "k", bytearray(b"x")),
             ("SET", "k", 1.5, -0.0, float("nan"), 2**70), ("MGET", *[f"k{i}" for i in range(3000)])]
    for cmd in cases:
        assert _wire(LINEAR, *cmd) == _wire(PLAIN, *cmd)
    with pytest.raises(UnicodeEncodeError):
        _Linear().pack_command("SET", "k\udc80", b"v")
    with pytest.raises(UnicodeEncodeError):
        Connection().pack_command("SET", "k\udc80", b"v")
