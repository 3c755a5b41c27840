"""One run per output folder: a lock file that names its owner.

Two trainings writing into one folder interleave their logs and leave one run's
``last.pth`` beside the other's ``best_model.pth``. The first run creates
``<out>/.genericssl.lock`` (atomically, O_EXCL) holding its pid, host and start time; a
second run refuses with those facts. A lock whose pid is dead on this host is stale (a
killed run) and is taken over with a note; one from another host cannot be checked
and is reported with the way to remove it.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".genericssl.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def ensure_writable_dir(folder: Path, what: str = "--out") -> None:
    """Create ``folder``; a path that cannot hold files is one clear error naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {folder}: a file of that name is in the way (a folder is needed)") from None
    except OSError as e:
        raise UserError(f"{what} {folder}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder}: the folder is not writable")


class RunLock:
    """``with RunLock(out): ...`` or ``acquire()`` / ``release()``; released at exit in any case."""

    def __init__(self, folder: str | Path, log=print):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.log = log
        self.held = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        ensure_writable_dir(self.folder)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid"), owner.get("host")
                if host == me["host"] and pid == me["pid"]:
                    # This process's own earlier Trainer (the API may build several): not a second run.
                    self.path.unlink(missing_ok=True)
                    continue
                if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                    self.log(f"note: taking over the stale lock {self.path} of a run that is gone "
                             f"(pid {pid}, started {owner.get('started', '?')})")
                    self.path.unlink(missing_ok=True)
                    continue
                who = (f"pid {pid} on host {host}, started {owner.get('started', '?')}" if owner
                       else "an unreadable lock file")
                hint = ("" if host == me["host"] else
                        f"; if no such run exists (another machine's lock cannot be checked), delete {self.path}")
                raise UserError(f"{self.folder} is in use by another genericssl run ({who}): wait for it to "
                                f"finish or choose another --out{hint}")
            except OSError as e:
                raise UserError(f"--out {self.folder}: cannot write the lock file ({e.strerror or e})") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return self
        raise UserError(f"cannot take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.held = False
            if self._owner().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
