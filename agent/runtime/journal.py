"""rigd's durable state, so a restart (or a crash) ends every device in a known state.

One JSON document in the state directory: what each device should run, the workload processes
rigd started (pid plus start time, so a reused pid is never mistaken for ours), the operations
in flight and the curtailment in force. It is written whole each time: a temporary file, fsync,
rename over the old one, fsync of the directory. A reader sees the old document or the new one,
never half of either, whatever happens to the power.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("rigd.journal")

JOURNAL_NAME = "journal.json"
VERSION = 1


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / JOURNAL_NAME
        self._lock = threading.Lock()
        self._doc: dict[str, Any] = {"version": VERSION}

    def load(self) -> dict[str, Any]:
        """The last document written; an unreadable one is kept aside, not trusted."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        try:
            doc = json.loads(self.path.read_text())
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                raise ValueError(f"unknown journal version {doc.get('version')!r}")
        except FileNotFoundError:
            doc = {"version": VERSION}
        except (OSError, ValueError) as exc:
            aside = self.path.with_suffix(".unreadable")
            os.replace(self.path, aside)
            log.error("journal_unreadable", path=str(self.path), moved_to=str(aside),
                      error=str(exc))
            doc = {"version": VERSION}
        with self._lock:
            self._doc = doc
        return dict(doc)

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._doc.get(key, default)

    def update(self, **changes: Any) -> None:
        """Replace top-level entries (None removes one) and write the document durably."""
        with self._lock:
            for key, value in changes.items():
                if value is None:
                    self._doc.pop(key, None)
                else:
                    self._doc[key] = value
            self._write(json.dumps(self._doc, indent=1, sort_keys=True))

    def _write(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".journal.", dir=self.state_dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        directory = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
