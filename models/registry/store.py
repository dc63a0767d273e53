"""Where the model registry keeps its bytes: one small interface, a Redis and a directory store.

A registry needs very little from storage: one JSON *index* document per model name,
replaced atomically with compare-and-set (so two processes changing stages never lose
an update), and write-once *artifacts* (signed model pickles) under keys the registry
chooses. Names and artifact keys are checked against strict patterns before they touch
a key or a path, and the directory store also refuses any path that resolves outside
its root (``..``, absolute names, symlinks planted inside the root).

>>> import tempfile
>>> store = DirectoryStore(tempfile.mkdtemp())
>>> store.compare_and_set("fraud", None, b'{"v": 1}'), store.compare_and_set("fraud", None, b"{}")
(True, False)
>>> store.read("fraud"), store.names()
(b'{"v": 1}', ['fraud'])
>>> store.read("../etc")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
streamlearn.models.registry.store.RegistryError: invalid model name '../etc'
"""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import unquote, urlparse

import redis

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ARTIFACT_RE = re.compile(r"^v[0-9]{1,9}-[0-9a-f]{12}$")


class RegistryError(ValueError):
    """A registry operation that is not allowed (bad name, bad transition, unknown version)."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise RegistryError(f"invalid model name {name!r}")
    return name


def check_artifact(key: str) -> str:
    if not isinstance(key, str) or not ARTIFACT_RE.match(key):
        raise RegistryError(f"invalid artifact key {key!r}; refusing to load")
    return key


class RegistryStore(ABC):
    @abstractmethod
    def read(self, name: str) -> bytes | None:
        """The index document of ``name`` (None if the name was never registered)."""

    @abstractmethod
    def compare_and_set(self, name: str, expected: bytes | None, new: bytes) -> bool:
        """Replace the index with ``new`` only if it still equals ``expected``."""

    @abstractmethod
    def put_artifact(self, name: str, key: str, blob: bytes) -> None:
        """Store ``blob`` under a key never used before (write-once)."""

    @abstractmethod
    def get_artifact(self, name: str, key: str) -> bytes | None: ...

    @abstractmethod
    def delete_artifact(self, name: str, key: str) -> None:
        """Only for artifacts no index refers to (a registration that lost a race)."""

    @abstractmethod
    def names(self) -> list[str]: ...


class RedisStore(RegistryStore):
    """Keys ``<prefix>:reg:<name>:index`` and ``<prefix>:reg:<name>:a:<artifact>``."""

    def __init__(self, url: str, prefix: str) -> None:
        self.r = redis.Redis.from_url(url)
        self.prefix = f"{prefix}:reg"

    def _index(self, name: str) -> str:
        return f"{self.prefix}:{check_name(name)}:index"

    def _art(self, name: str, key: str) -> str:
        return f"{self.prefix}:{check_name(name)}:a:{check_artifact(key)}"

    def read(self, name: str) -> bytes | None:
        return self.r.get(self._index(name))

    def compare_and_set(self, name: str, expected: bytes | None, new: bytes) -> bool:
        key = self._index(name)
        with self.r.pipeline() as p:
            try:
                p.watch(key)
                if p.get(key) != expected:
                    return False
                p.multi()
                p.set(key, new)
                p.sadd(f"{self.prefix}:names", name)
                p.execute()
                return True
            except redis.WatchError:
                return False

    def put_artifact(self, name: str, key: str, blob: bytes) -> None:
        if not self.r.set(self._art(name, key), blob, nx=True):
            raise RegistryError(f"artifact {name}/{key} already exists (artifacts are write-once)")

    def get_artifact(self, name: str, key: str) -> bytes | None:
        return self.r.get(self._art(name, key))

    def delete_artifact(self, name: str, key: str) -> None:
        self.r.delete(self._art(name, key))

    def names(self) -> list[str]:
        return sorted(n.decode() for n in self.r.smembers(f"{self.prefix}:names"))


class DirectoryStore(RegistryStore):
    """``<root>/<name>/index.json`` and ``<root>/<name>/<artifact>.sla``; flock for compare-and-set."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str, filename: str) -> Path:
        path = (self.root / check_name(name) / filename).resolve()
        if not path.is_relative_to(self.root):
            raise RegistryError(f"refusing path outside the registry root: {path}")
        return path

    def read(self, name: str) -> bytes | None:
        path = self._path(name, "index.json")
        return path.read_bytes() if path.exists() else None

    def compare_and_set(self, name: str, expected: bytes | None, new: bytes) -> bool:
        path = self._path(name, "index.json")
        path.parent.mkdir(exist_ok=True)
        with open(self._path(name, ".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            current = path.read_bytes() if path.exists() else None
            if current != expected:
                return False
            tmp = path.with_name(f".index.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as f:
                f.write(new)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # readers see the old or the new index, never half of one
            return True

    def put_artifact(self, name: str, key: str, blob: bytes) -> None:
        path = self._path(name, f"{check_artifact(key)}.sla")
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(blob)
        try:
            os.link(tmp, path)  # fails if it exists: write-once, and never a partial file
        except FileExistsError:
            raise RegistryError(f"artifact {name}/{key} already exists (artifacts are write-once)") from None
        finally:
            tmp.unlink()

    def get_artifact(self, name: str, key: str) -> bytes | None:
        path = self._path(name, f"{check_artifact(key)}.sla")
        return path.read_bytes() if path.is_file() else None

    def delete_artifact(self, name: str, key: str) -> None:
        self._path(name, f"{check_artifact(key)}.sla").unlink(missing_ok=True)

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/index.json") if NAME_RE.match(p.parent.name))


def open_store(url: str, redis_prefix: str = "sl:v1") -> RegistryStore:
    """``redis://...`` / ``rediss://...`` or ``file:///abs/dir`` (a plain path also works)."""
    parsed = urlparse(url)
    if parsed.scheme in ("redis", "rediss", "unix"):
        return RedisStore(url, redis_prefix)
    if parsed.scheme == "file":
        return DirectoryStore(unquote(parsed.path))
    if parsed.scheme == "":
        return DirectoryStore(url)
    raise RegistryError(f"unsupported registry url {url!r}: use redis://... or file:///dir")
