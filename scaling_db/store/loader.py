"""Loading runs as they finish: in the background, the runs that finish close together in one go.

A runner calls `RunLoader.submit(run_id)` when a run ends and goes on at once. One thread in the
driver loads: each time, every run submitted since its last load, in one `ingest_runs` call
(open, one transaction, close). Why batch: opening the file and the checkpoint at close (DuckDB
writing its WAL into the file) cost more than loading a 1,000-checkpoint run, so runs finishing
while a load is under way share the next open and checkpoint.

What the close buys is kept: after every load the file is closed, its WAL checkpointed, so a
copy of the .duckdb file holds every run loaded so far. The one-writer rule is kept too: this
thread is the process's only writer, and between loads the file is closed, so readers (queries,
reports, `scaledb serve`) and other writers get in.
"""

from __future__ import annotations

import threading
from types import TracebackType

from scaling_db.errors import StoreError
from scaling_db.store.ingest import IngestReport, ingest_runs
from scaling_db.workspace import Workspace


class RunLoader:
    """Background loader of finished runs; `close()` (or leaving the `with` block) waits for it."""

    def __init__(self, workspace: Workspace, *, lock_timeout_s: float | None = None) -> None:
        self.ws = workspace
        self.lock_timeout_s = lock_timeout_s
        self.report = IngestReport()
        self.batches: list[list[str]] = []  # the run ids of each load, in order
        self.failed: dict[str, str] = {}  # run id -> why its load failed (its log stays the record)
        self._pending: list[str] = []
        self._closing = False
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, run_id: str) -> None:
        """Queue a finished run for loading; returns at once."""
        with self._cv:
            if self._closing:
                raise StoreError(f"run {run_id}: the loader is closed. Submit runs before close().")
            self._pending.append(run_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="scaledb-loader", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _work(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return
                batch, self._pending = list(dict.fromkeys(self._pending)), []
            self.batches.append(batch)
            try:
                self.report = self.report.merge(ingest_runs(self.ws, batch, lock_timeout_s=self.lock_timeout_s))
            except StoreError as exc:  # e.g. another writer held the file past the timeout
                self.failed.update({run_id: str(exc) for run_id in batch})

    def close(self) -> IngestReport:
        """Load what is queued, stop the thread, and return what all loads did. Runs whose load
        failed are in `failed` (not raised: their logs are the record; `scaledb ingest` loads them)."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()
        return self.report

    def __enter__(self) -> "RunLoader":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
