"""File-system side of the ``filewatch`` source: which paths count, and what they are now.

Everything here is synchronous and blocking (``stat``, ``scandir``, reading files); the
source calls it through ``anyio.to_thread.run_sync``.

Path safety: the root is resolved once. A path is *inside* when its name is under the
root (no ``..``) **and** its real path (symlinks resolved) is under the root too; anything
else is :class:`Refused`, never read and never delivered. Files are read through their
verified real path, so a symlink that points outside cannot leak content.

Matching (``patterns`` / ``ignore``) uses ``fnmatch`` globs, case-sensitive, tried on the
relative path (``/`` separators; ``*`` also matches ``/``) and on the base name;
``ignore`` wins. Names of files that are still being written by common tools
(:data:`IN_PROGRESS_NAMES`: ``*.tmp``, ``*.part``, ``~*``, editor swap files...) are
ignored unless a pattern that is itself of such a form (``*.part``, ``~*.csv``) matches
them: ``*.csv`` does not opt ``~lock.csv`` in, ``*.part`` does opt ``movie.part`` in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

__all__ = [
    "IN_PROGRESS_NAMES",
    "Dir",
    "File",
    "Ignored",
    "Missing",
    "Observation",
    "PathPolicy",
    "Refused",
    "Stat",
    "hash_file",
    "observe",
    "scan",
]

IN_PROGRESS_NAMES: tuple[str, ...] = (
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.swp",
    "*.swx",
    "*~",
    "~*",
    ".#*",
    ".~lock.*",
)
"""Base names of in-progress files (download managers, rsync/curl temp names, editors)."""

_CHUNK = 1 << 20


@dataclass(slots=True, frozen=True)
class Stat:
    """The fingerprint that decides whether a file changed."""

    size: int
    mtime_ns: int
    ino: int


@dataclass(slots=True, frozen=True)
class File:
    rel: str
    real: str
    """The verified real path (inside the root): the one to read."""
    stat: Stat


@dataclass(slots=True, frozen=True)
class Dir:
    rel: str


@dataclass(slots=True, frozen=True)
class Missing:
    rel: str
    in_progress: bool = False
    """The name is an in-progress one (``.x.tmp``): it was probably renamed into place."""


@dataclass(slots=True, frozen=True)
class Ignored:
    """Inside the root but not wanted; ``ino`` is set for in-progress names (rename
    tracking) and None otherwise."""

    rel: str
    ino: int | None


@dataclass(slots=True, frozen=True)
class Refused:
    path: str
    reason: str


Observation = File | Dir | Missing | Ignored | Refused


class PathPolicy:
    """Root, recursion and glob rules of one trigger."""

    def __init__(
        self,
        root: Path,
        patterns: Sequence[str],
        ignore: Sequence[str],
        recursive: bool,
    ) -> None:
        self.root = root
        self._root_s = str(root)
        self._prefix = self._root_s.rstrip(os.sep) + os.sep
        self.patterns = tuple(patterns) or ("*",)
        self.ignore = tuple(ignore)
        # Patterns that are themselves in-progress forms (``*.part``) opt those names in.
        self._explicit = tuple(p for p in self.patterns if _matches(p, IN_PROGRESS_NAMES))
        self.recursive = recursive

    def _inside(self, real: str) -> bool:
        return real == self._root_s or real.startswith(self._prefix)

    def rel(self, path: str) -> str | None:
        """The ``/``-separated path relative to the root, or None when not under it."""
        if not path.startswith(self._prefix):
            return None
        rel = path[len(self._prefix) :].replace(os.sep, "/")
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts):
            return None
        return rel

    def in_depth(self, rel: str) -> bool:
        return self.recursive or "/" not in rel

    def dir_ignored(self, rel: str) -> bool:
        return _matches(rel, self.ignore)

    def in_progress(self, rel: str) -> bool:
        return _matches(rel, IN_PROGRESS_NAMES) and not _matches(rel, self._explicit)

    def wanted(self, rel: str) -> bool:
        if _matches(rel, self.ignore) or not _matches(rel, self.patterns):
            return False
        return not self.in_progress(rel)


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    name = rel.rpartition("/")[2]
    return any(fnmatchcase(rel, p) or fnmatchcase(name, p) for p in patterns)


def _stat(st: os.stat_result) -> Stat:
    return Stat(st.st_size, st.st_mtime_ns, st.st_ino)


def observe(policy: PathPolicy, path: str) -> Observation:
    """What ``path`` (absolute, as the watcher reported it) is right now."""
    rel = policy.rel(path)
    if rel is None:
        return Refused(path, "not under the watched root")
    if not policy.in_depth(rel):
        return Ignored(rel, None)
    try:
        real = os.path.realpath(path)
        if not policy._inside(real):
            return Refused(path, "resolves outside the watched root")
        parent = os.path.dirname(path)
        if os.path.realpath(parent) != parent:
            # Reached through a symlinked directory, which scans do not follow either.
            return Ignored(rel, None)
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return Missing(rel, policy.in_progress(rel))
    except OSError as exc:
        return Refused(path, f"cannot stat: {exc.strerror}")
    if os.path.isdir(real):
        return Ignored(rel, None) if os.path.islink(path) else Dir(rel)
    if not os.path.isfile(real):
        return Ignored(rel, None)
    if policy.wanted(rel):
        return File(rel, real, _stat(st))
    return Ignored(rel, st.st_ino if policy.in_progress(rel) else None)


def scan(policy: PathPolicy, top: str = "") -> list[Observation]:
    """Every wanted file (and refused path) under ``top`` (relative; "" = the root).

    Raises FileNotFoundError when the root itself is gone (so that a vanished or
    unmounted root never reads as "every file was removed").
    """
    out: list[Observation] = []
    start = os.path.join(policy._root_s, *top.split("/")) if top else policy._root_s
    stack = [start]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            if directory == policy._root_s:
                raise
            continue
        except OSError as exc:
            out.append(Refused(directory, f"cannot list: {exc.strerror}"))
            continue
        for entry in entries:
            _scan_entry(policy, entry, stack, out)
    return out


def _scan_entry(
    policy: PathPolicy, entry: os.DirEntry[str], stack: list[str], out: list[Observation]
) -> None:
    rel = policy.rel(entry.path)
    if rel is None:
        return
    if entry.is_dir(follow_symlinks=False):
        if policy.recursive and not policy.dir_ignored(rel):
            stack.append(entry.path)
    elif entry.is_symlink():
        obs = observe(policy, entry.path)
        if isinstance(obs, File | Refused):
            out.append(obs)
    elif entry.is_file(follow_symlinks=False) and policy.wanted(rel):
        with contextlib.suppress(FileNotFoundError):
            out.append(File(rel, entry.path, _stat(entry.stat(follow_symlinks=False))))


def hash_file(real: str, expected: Stat) -> str | Stat | OSError:
    """MD5 hex of the file's content if it still has fingerprint ``expected`` before and
    after reading; else its new fingerprint (it changed), or the error reading it
    (FileNotFoundError: it vanished)."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(real, "rb") as f:
            before = _stat(os.fstat(f.fileno()))
            if before != expected:
                return before
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
            after = _stat(os.fstat(f.fileno()))
        now = _stat(os.stat(real))
    except OSError as exc:
        return exc
    if after != expected:
        return after
    if now != expected:
        return now
    return digest.hexdigest()
