"""A local, append-only spool of evidence that could not be delivered yet.

While Elasticsearch is away, snapshots are appended here — one JSON line per write, flushed
and fsync'ed before the responder reports success — and delivered in order when it returns.
Delivery re-sends whole batches; the stores ignore ids they already hold, so a crash between
sending and truncating duplicates nothing. A torn last line (a crash in mid-append) is
ignored: that write never returned, so the step was never reported as done and will run again.
An advisory lock (`flock`) keeps two processes sharing the directory from interleaving.

Blocking file I/O: call through `asyncio.to_thread` from the event loop (`spooling.py` does).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from mlwarden.responders.evidence.documents import EvidenceDocument

SPOOL_FILE: Final = "evidence-spool.jsonl"


class Spool:
    """The spool file in `directory` (created on first append)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / (SPOOL_FILE + ".lock")).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, documents: Sequence[EvidenceDocument]) -> None:
        """Append one batch durably (write, flush, fsync; the folder too on creation)."""
        line = json.dumps(
            {"documents": [{"id": d.id, "source": d.source} for d in documents]},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        with self._locked():
            created = not self.path.exists()
            with self.path.open("ab") as spool:
                if spool.tell() > 0 and not self._ends_with_newline():
                    spool.write(b"\n")  # seal a torn line so this batch parses on its own
                spool.write(line.encode() + b"\n")
                spool.flush()
                os.fsync(spool.fileno())
            if created:
                _fsync_directory(self.directory)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as spool:
            spool.seek(-1, os.SEEK_END)
            return spool.read(1) == b"\n"

    def pending(self) -> tuple[list[EvidenceDocument], int]:
        """Everything not yet delivered, in append order, and the file size it was read at."""
        with self._locked():
            return self._read()

    def _read(self) -> tuple[list[EvidenceDocument], int]:
        if not self.path.exists():
            return [], 0
        data = self.path.read_bytes()
        documents: list[EvidenceDocument] = []
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                batch = json.loads(raw)
            except ValueError:
                continue  # a torn append: that write was never acknowledged
            documents.extend(EvidenceDocument(d["id"], d["source"]) for d in batch["documents"])
        return documents, len(data)

    def discard_delivered(self, size: int) -> None:
        """Drop the first `size` bytes (delivered); keep anything appended since."""
        with self._locked():
            if not self.path.exists():
                return
            data = self.path.read_bytes()
            rest = data[size:]
            temporary = self.path.with_suffix(".tmp")
            with temporary.open("wb") as handle:
                handle.write(rest)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.path)
            _fsync_directory(self.directory)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
