"""Chat sessions: their turns and profile in one SQLite file, so a restarted process continues a conversation."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from knowrec.types import ChatProfile, ChatTurn

__all__ = ["SessionInfo", "SessionStore"]


@dataclass(frozen=True)
class SessionInfo:
    """A stored session."""

    id: str
    user_id: str
    profile: ChatProfile
    created_at: float
    updated_at: float


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, profile TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id), seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    payload TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (session_id, seq)
);
"""


class SessionStore:
    """Sessions and their turns in one SQLite file (``":memory:"`` for a throw-away store); thread-safe.

    Example:
        >>> s = SessionStore(":memory:")
        >>> info = s.create("abc", None)
        >>> info.user_id, s.get("abc").profile.is_empty()
        ('chat:abc', True)
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                if str(self.path) != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._conn = conn
            with self._conn:
                yield self._conn

    def create(self, session_id: str | None, user_id: str | None) -> SessionInfo:
        """Create a session (a fresh id when ``session_id`` is None); its user is ``user_id`` or ``chat:<id>``."""
        sid = session_id or secrets.token_hex(8)
        now = time.time()
        user = user_id or f"chat:{sid}"
        with self._db() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sessions (id, user_id, profile, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (sid, user, ChatProfile().model_dump_json(), now, now),
            )
        info = self.get(sid)
        assert info is not None
        return info

    def get(self, session_id: str) -> SessionInfo | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT id, user_id, profile, created_at, updated_at FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None:
            return None
        return SessionInfo(row[0], row[1], ChatProfile.model_validate_json(row[2]), row[3], row[4])

    def save_profile(self, session_id: str, profile: ChatProfile) -> None:
        with self._db() as conn:
            conn.execute(
                "UPDATE sessions SET profile = ?, updated_at = ? WHERE id = ?",
                (profile.model_dump_json(), time.time(), session_id),
            )

    def append(self, turn: ChatTurn) -> None:
        with self._db() as conn:
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE session_id = ?", (turn.session_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO turns (session_id, seq, role, text, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (turn.session_id, seq, turn.role, turn.text, turn.model_dump_json(), turn.created_at),
            )
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), turn.session_id))

    def turns(self, session_id: str) -> list[ChatTurn]:
        with self._db() as conn:
            rows = conn.execute("SELECT payload FROM turns WHERE session_id = ? ORDER BY seq", (session_id,)).fetchall()
        return [ChatTurn.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
