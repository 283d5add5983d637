"""The server's files are its own: data directory 0700, SQLite database (and -wal, -shm) 0600.

The database holds device secrets (encrypted), hashes of every credential and the audit log;
SQLite creates files 0644 (less the umask), and its -wal and -shm files take the mode of the
database file. So the database file is created 0600 before SQLite first opens it, and files
left readable by an older release are tightened when the server or the CLI opens them.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from offhook.contract.logs import kv

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def private_directory(path: Path) -> None:
    """Create ``path`` 0700 (missing parents as ``mkdir -p`` makes them), or tighten it to 0700
    when it is ours and open to others. A directory of someone else, or a shared sticky one
    (``/tmp``), is left alone with a warning: it was chosen on purpose."""
    if not path.exists():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(path, DIR_MODE)  # mkdir's mode is reduced by the umask
        return
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & 0o077 == 0:
        return
    if info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX:
        os.chmod(path, DIR_MODE)
        log.info(
            "data directory made private",
            extra=kv(path=path, was=format(stat.S_IMODE(info.st_mode), "o")),
        )
    else:
        log.warning(
            "data directory is open to other users: keep the server's data in a directory of "
            "its own",
            extra=kv(path=path, mode=format(stat.S_IMODE(info.st_mode), "o")),
        )


def private_sqlite_files(database: Path) -> None:
    """Create the database file 0600 if it is missing (SQLite accepts an empty file as a new
    database), and make the database, its WAL, shared-memory and journal files 0600."""
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for suffix in SQLITE_SUFFIXES:
        path = Path(f"{database}{suffix}")
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                os.chmod(path, FILE_MODE)
                log.info("database file made private", extra=kv(path=path, was=format(mode, "o")))
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning("database file open to others, not ours to change", extra=kv(path=path))
