"""Where archive files live: a tiny interface, a local-directory implementation.

The archive needs five operations, all of which an object store (S3, GCS, MinIO) has:

* ``publish(name, local_path)``: make a completed file visible under ``name`` in one
  step (local: ``rename``; S3: a ``PutObject``/multipart upload, visible only when done),
* ``write(name, data)``: the same for a small blob (manifests, offset state),
* ``read(name)``, ``list(prefix)``, ``delete(name)``.

Files are written in a local *staging* directory first (the archiver appends to them as
records arrive) and published only when complete, so a crash never leaves a half-written
file under a listed name. Names are ``/``-separated and relative to the archive root.

>>> import tempfile
>>> store = LocalStorage(tempfile.mkdtemp())
>>> store.write("a/b.json", b"{}")
>>> store.list("a/"), store.read("a/b.json")
(['a/b.json'], b'{}')
>>> store.delete("a/b.json"); store.list()
[]
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

STAGING = "_staging"


class Storage(ABC):
    """Complete, immutable objects under relative names."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Names of published objects starting with ``prefix``, sorted; never staging files."""

    @abstractmethod
    def read(self, name: str) -> bytes: ...

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Publish ``data`` under ``name`` atomically (readers see all of it or nothing)."""

    @abstractmethod
    def publish(self, name: str, local_path: Path) -> None:
        """Publish a completed local staging file under ``name`` atomically; it is consumed."""

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def staging_dir(self) -> Path:
        """A local directory for files still being written (never listed)."""

    def describe(self, name: str) -> str:
        """How to name ``name`` in an error message a person can act on."""
        return name


class LocalStorage(Storage):
    """A directory. Publishing is ``fsync`` + ``rename`` + ``fsync`` of the directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise ValueError(f"archive name {name!r} escapes the archive root")
        return path

    def list(self, prefix: str = "") -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == STAGING or rel_dir.startswith(STAGING + os.sep):
                dirnames[:] = []
                continue
            for f in filenames:
                if f.startswith(".tmp-"):  # a write() interrupted by a crash
                    continue
                rel = f if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{f}"
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)

    def read(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fo:
            fo.write(data)
            fo.flush()
            os.fsync(fo.fileno())
        self._rename(tmp, path)

    def publish(self, name: str, local_path: Path) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(local_path, "rb") as fo:
            os.fsync(fo.fileno())
        self._rename(Path(local_path), path)

    @staticmethod
    def _rename(src: Path, dst: Path) -> None:
        os.replace(src, dst)
        # the rename itself is durable only once the directory entry is on disk
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def staging_dir(self) -> Path:
        path = self.root / STAGING
        path.mkdir(parents=True, exist_ok=True)
        return path

    def describe(self, name: str) -> str:
        return str(self.root / name)


def open_storage(location: str | Path) -> Storage:
    """A storage for an archive location. Only local directories are implemented here."""
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"archive location {text!r}: only local directories are supported "
                         "(see README, 'Replay, backtests and retraining', for an object-store backend)")
    return LocalStorage(text.removeprefix("file://"))
