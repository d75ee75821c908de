"""Files of local mode. The data directory holds conversations, usage and sealed secrets, so it is
private to the user running the gateway: directories 0700, files 0600. Permissions are tightened
on every open as well, so a directory an older version created 0755/0644 is fixed by a restart."""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def open_private_sqlite(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to the SQLite file `path`, made private first: SQLite creates its WAL and SHM
    files with the mode of the database file, so creating that one 0600 covers all three.
    WAL with synchronous=NORMAL: a commit survives the process being killed (not a power cut).
    Usable from any thread (callers hold their own lock); autocommit: callers BEGIN themselves."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    for candidate in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)):
        if candidate.exists():
            os.chmod(candidate, FILE_MODE)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def private_key_file(path: Path, nbytes: int = 32) -> bytes:
    """The random key in `path`, created (0600) on first use. Two processes starting at once agree
    on one key: each writes its own candidate aside and links it into place; only one link wins."""
    private_dir(path.parent)
    if not path.exists():
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
        try:
            os.write(fd, secrets.token_bytes(nbytes))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(candidate)
    os.chmod(path, FILE_MODE)
    key = path.read_bytes()
    if len(key) != nbytes:
        raise ValueError(f"{path} is not a {nbytes}-byte key file")
    return key
