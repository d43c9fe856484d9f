"""One writer per project: an OS file lock on ``<project>/.lock`` whose content names the owner.

The lock is an advisory ``flock`` (POSIX) or ``msvcrt.locking`` (Windows) on a file that stays
in place; the operating system releases it when the owner exits or is killed, so a crash never
leaves a project locked. The file holds JSON ``{pid, host, user, since}`` so a refused writer
can be told who holds the project.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".lock"


class StoreLockedError(RuntimeError):
    """The project is open for writing elsewhere; the message names the owner."""


@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    user: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"{self.user} on {self.host} (pid {self.pid}) since {when}"


def current_user() -> str:
    """The OS user name (the default author of corrections)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def read_owner(path: Path) -> LockOwner | None:
    """The owner recorded in a lock file, or None when it is missing, empty or unreadable."""
    try:
        doc = json.loads(path.read_text())
        return LockOwner(int(doc["pid"]), str(doc["host"]), str(doc["user"]), float(doc["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _try_lock(fd: int) -> bool:
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class ProjectLock:
    """The writer lock of the project folder ``root``."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_NAME
        self.owner = LockOwner(os.getpid(), socket.gethostname(), current_user(), time.time())
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and record this process as its owner.

        Raises:
            StoreLockedError: another process holds it (the message names it).
        """
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            other = read_owner(self.path)
            who = other.describe() if other else "another process"
            raise StoreLockedError(
                f"project '{self.path.parent}' is open for writing by {who}; "
                "close it there, or open it read-only"
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(self.owner.__dict__).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (the file stays: removing it would race with a new writer)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the OS lock
        self._fd = None
