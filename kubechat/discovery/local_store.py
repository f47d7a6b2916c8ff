"""The local lease store: one JSON file per worker in a state folder.

Used when workers run as local processes (``kubechat up``). Writers replace a file atomically
(temp file + ``os.replace``), so a reader sees either the old record or the new one. A file that
does not parse (a foreign or damaged file) is skipped with a warning. Expiry is by renew time +
lease duration, as with Kubernetes Leases; files long past expiry are swept on read.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from .atomic_json import replace_json
from .records import WorkerRecord

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
SUFFIX = ".json"


class LocalLeaseStore:
    """Worker records as files in ``state_dir``: a ``LeaseWriter`` and a ``WorkerSource``.

    ``sweep_after``: seconds past a record's expiry (or a broken file's last change) after which
    a read deletes the file; None keeps everything.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        sweep_after: float | None = 300.0,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 0.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.sweep_after = sweep_after
        self.clock = clock
        # Readers on a hot path (the gateway asks per request) may reuse a snapshot this long;
        # far below the lease duration, so it never keeps a dead worker routable for longer.
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list[WorkerRecord]] | None = None
        self._warned: set[tuple[str, float]] = set()

    def path_for(self, name: str) -> Path:
        """The file holding worker ``name``'s record."""
        if not SAFE_NAME.match(name):
            raise ValueError(f"worker name {name!r} is not usable as a file name")
        return self.state_dir / f"{name}{SUFFIX}"

    def publish(self, record: WorkerRecord) -> None:
        """Write ``record`` atomically, replacing the previous one."""
        target = self.path_for(record.name)
        data = {
            "name": record.name,
            "deployment": record.deployment,
            "renewTime": record.renew_time,
            "leaseDurationSeconds": record.lease_duration,
            "annotations": record.to_annotations(),
        }
        replace_json(target, data)  # its temp file is never listed: a dot name, not .json

    def remove(self, name: str) -> None:
        """Delete worker ``name``'s record; nothing happens if it is absent."""
        self.path_for(name).unlink(missing_ok=True)

    def snapshot(self) -> list[WorkerRecord]:
        """Every readable record, sorted by name; broken files are skipped, old ones swept."""
        if self.cache_seconds > 0:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return list(self._cached[1])
            records = self._scan()
            self._cached = (now, records)
            return list(records)
        return self._scan()

    def _scan(self) -> list[WorkerRecord]:
        if not self.state_dir.is_dir():
            return []
        now = self.clock()
        records = []
        for path in sorted(self.state_dir.glob(f"*{SUFFIX}")):
            if path.name.startswith("."):
                continue
            record = self._read(path, now)
            if record is None:
                continue
            if self._expired_long_ago(record.renew_time + record.lease_duration, now):
                self._sweep(path)
                continue
            records.append(record)
        return records

    def _read(self, path: Path, now: float) -> WorkerRecord | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return WorkerRecord.from_annotations(
                data.get("annotations") or {},
                name=str(data["name"]),
                deployment=str(data.get("deployment", "")),
                renew_time=float(data["renewTime"]),
                lease_duration=float(data["leaseDurationSeconds"]),
            )
        except FileNotFoundError:  # removed between listing and reading
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                return None
            if self._expired_long_ago(mtime, now):
                self._sweep(path)
            elif (path.name, mtime) not in self._warned:
                self._warned.add((path.name, mtime))
                log.warning("skipping unreadable worker record %s: %s", path, exc)
            return None

    def _expired_long_ago(self, when: float, now: float) -> bool:
        return self.sweep_after is not None and now > when + self.sweep_after

    def _sweep(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            log.info("swept old worker record %s", path)
        except OSError as exc:
            log.debug("could not sweep %s: %s", path, exc)
