"""The job store's SQLite file: its schema migrations and the connection rules.

Rules that keep it safe under concurrent processes and crashes (see HARDENING_NOTES §5):

- WAL mode (readers never block the writer) and a busy timeout.
- Every read-then-write runs inside `BEGIN IMMEDIATE`: a deferred transaction that upgrades
  from read to write gets SQLITE_BUSY at once, whatever the busy timeout says.
- One connection per thread and process, opened lazily; a connection is never used across
  `fork` (the owning pid is checked on every use).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BUSY_TIMEOUT_MS = 30_000

# Each entry upgrades the schema by one version; never edit an entry once released,
# append a new one instead.
MIGRATIONS: list[str] = [
    # 1: jobs and their engine events
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN
            ('queued','running','stopping','succeeded','failed','cancelled','interrupted')),
        resume INTEGER NOT NULL DEFAULT 0,
        resume_from TEXT,
        step INTEGER NOT NULL DEFAULT 0,
        max_steps INTEGER,
        it_s REAL,
        eta_s REAL,
        loss REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        heartbeat_at REAL,
        pid INTEGER,
        worker_id TEXT,
        run_dir TEXT,
        exit_code INTEGER,
        error_code TEXT,
        error_message TEXT,
        advice TEXT,
        files TEXT NOT NULL DEFAULT '[]',
        last_checkpoint TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        parent_job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        retry_tier INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        sample_requested INTEGER NOT NULL DEFAULT 0,
        save_requested INTEGER NOT NULL DEFAULT 0,
        events_offset INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_status ON jobs(status, id);
    CREATE TABLE events (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        time REAL NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    """,
    # 2: job kinds (training, try-it) and what a non-training job works on; existing jobs trained
    """
    ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train';
    ALTER TABLE jobs ADD COLUMN request TEXT NOT NULL DEFAULT '{}';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class JobNotFound(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return self.args[0]


class Database:
    """The connection handling and migrations shared by the store's two sides."""

    def __init__(self, data_dir: str | os.PathLike[str]):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "studio.db"
        self._local = threading.local()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so that every write
        # transaction is IMMEDIATE, never Python's default DEFERRED.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode never corrupts the file; a power cut can only lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            # Opened before a fork (or never): start fresh. The inherited object is kept alive
            # on purpose so it is never closed in this process (sqlite howtocorrupt §2.6).
            if getattr(local, "conn", None) is not None:
                _ABANDONED_AFTER_FORK.append(local.conn)
            local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version} but this studio only knows up to "
                    f"{SCHEMA_VERSION}; upgrade the studio or use another data folder"
                )
            for script in MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        return self._conn().execute("SELECT version FROM schema_version").fetchone()[0]

    def integrity_check(self) -> str:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0]

    def _get(self, conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return row


# Connections inherited through fork; referenced so that they are never closed in the child.
_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []
