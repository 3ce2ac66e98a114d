"""The audit database's path, checked on the file system before SQLite is asked to open it.

SQLite says only "unable to open database file" for a folder, a missing folder or one the bot may not write, and
a failed open leaves aiosqlite's worker thread reporting to an event loop that may be gone by then.
"""

from __future__ import annotations

import os
from pathlib import Path


def database_path_problem(path: str | Path, *, write: bool = True) -> str | None:
    """One sentence naming what is wrong with the audit database's path, or None when SQLite may try it.
    `write=False` for a database that is only read (audit listings, verify of a copy)."""
    path = Path(path)
    where = "check DISPATCH_BOT_DB (or audit.database)"
    user = f"this user (uid {os.getuid()})"
    fix = "give it to that user (chown), or mount a volume that user owns"
    if path.is_dir():
        example = path / "dispatch-audit.db"
        return (
            f"The audit database {path} is a folder: point DISPATCH_BOT_DB (or audit.database) at a file in it, "
            f"like {example}."
        )
    folder = path.parent
    if not folder.exists():
        return f"The folder {folder} of the audit database {path} does not exist: create it, or {where}."
    if not folder.is_dir():
        return f"The audit database {path} is inside {folder}, which is a file, not a folder: {where}."
    if not write:
        return None if os.access(path, os.R_OK) else f"The audit database {path} cannot be read by {user}: {fix}."
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"The audit database {path} cannot be read and written by {user}: {fix}."
    # SQLite's WAL mode writes two files beside the database, so the folder itself must be writable.
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"The folder {folder} of the audit database cannot be written by {user}: {fix}."
    return None
