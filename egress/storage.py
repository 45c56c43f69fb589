"""Where egress output goes: a small interface, a local directory by default.

Keys are relative paths such as ``hls/<token>/seg-00001.ts`` or ``recordings/<id>/part-1.mp4``.
Writers (PyAV muxers) need a real file path, so the interface hands out local paths; a remote
store would upload finished files from them.
"""

from __future__ import annotations

import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class Storage(ABC):
    @abstractmethod
    def local_path(self, key: str) -> Path:
        """A path to write ``key`` to (its directory exists)."""

    @abstractmethod
    def open_path(self, key: str) -> Path | None:
        """A path to read ``key`` from, or ``None`` if it does not exist."""

    @abstractmethod
    def size(self, key: str) -> int | None: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (a file, or a directory and what it holds)."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """The keys of the files directly under ``prefix``."""


class LocalStorage(Storage):
    """Files under one directory (``<data dir>/egress`` by default)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def open_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def size(self, key: str) -> int | None:
        path = self.open_path(key)
        return None if path is None else path.stat().st_size

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        directory = self._path(prefix)
        if not directory.is_dir():
            return []
        return sorted(f"{prefix}/{p.name}" for p in directory.iterdir() if p.is_file())


def default_storage(data_dir: Path) -> Storage:
    return LocalStorage(data_dir / "egress")
