"""The skeleton of a feature-drift detector: per-version reference, then a sliding window.

`feature_drift` and `mmd_drift` differ in what they test, not in how they follow a version:
both learn the reference from a version's first `baseline_size` feature vectors
(`baseline.Baselines`, one per version so that an idle version can be forgotten: `Baselines`
has no way to drop a key), then keep the latest `window_size` vectors in a ring buffer and
hand each new event to `_step`. Records without features are skipped; so are records whose
feature count differs from the version's first (counted in `skipped`). Events are processed
one by one in batch order, so any batch split gives the same alerts.

Both look at one event in `sample_every` (`feature_rows.sampled`). Real traffic comes in
client sessions, and each client sends its own kind of input: 500 consecutive events are a
few clients, not the population, so a reference and windows of consecutive events differ
for benign reasons and the test pages. On the simulator's benign traffic (200 clients,
sessions, favourite classes), windows of consecutive events exceeded the iid threshold 2% of
the time; sampling 1 in 10 put every window inside the null (1 in 20: p99 at the null's
p99). The reference and the window then span `sample_every` times more traffic, at the
price of a later detection; and sampling makes every per-event cost ten times smaller.

A reference fitted offline (`install_baselines`, from a baseline file) is taken up at the
first event with features of a listed version that has no frozen reference yet (new, still
learning, or forgotten when idle): from that event on the version is tested, as if it had
just learned the reference. Its feature count and names must be the event's; if they are not,
the file's reference does not fit this traffic, the version learns online and a warning
says so. A version with a frozen reference (learned, installed or restored from a checkpoint)
keeps it.
"""

from __future__ import annotations

import abc
import base64
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.baseline import Baselines, ModelKey, decode_each
from mlwarden.detectors.columns import feature_vector
from mlwarden.detectors.feature_rows import (
    SAMPLE_IDS,
    FloatArray,
    VersionTable,
    feature_names,
    pack,
    pack_row,
    sampled,
    unpack,
    unpack_row,
)
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord

_STATE_VERSION = 1

log = logging.getLogger(__name__)


class FeatureWindowConfig(Protocol):
    """The settings every feature-window detector's config has."""

    @property
    def baseline_size(self) -> int: ...
    @property
    def window_size(self) -> int: ...
    @property
    def max_features(self) -> int: ...
    @property
    def idle_seconds(self) -> float: ...
    @property
    def sample_every(self) -> int: ...
    @property
    def seed(self) -> int: ...


class _EncodedReference(BaseModel):
    """A frozen reference as a baseline file holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: list[str] | None = Field(description="Feature names when the server sent a mapping.")
    rows: list[str] = Field(description="Each row: base64 of little-endian float64 (`pack_row`).")


@dataclass(frozen=True, slots=True)
class _Installed:
    names: list[str] | None
    rows: FloatArray


@dataclass(slots=True)
class FeatureVersion:
    """What every feature-drift detector keeps per model version."""

    baseline: Baselines[tuple[float, ...]]
    dim: int
    names: list[str] | None
    last_ts: float
    window: FloatArray | None = None  # ring buffer of raw vectors once the reference froze
    count: int = 0  # sampled events since the reference froze
    skipped: int = 0  # records with a different feature count
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=SAMPLE_IDS))


VersionT = TypeVar("VersionT", bound=FeatureVersion)


class FeatureWindowDetector(Detector, Generic[VersionT]):
    """Per-version reference and window; subclasses say what a frozen version does per event."""

    def __init__(self, config: FeatureWindowConfig, version_type: type[VersionT]) -> None:
        self._baseline_size = config.baseline_size
        self._window_size = config.window_size
        self._max_features = config.max_features
        self._sample_every = config.sample_every
        self._seed = config.seed
        self._version_type = version_type
        self._versions: VersionTable[VersionT] = VersionTable(config.idle_seconds)
        self._installed: dict[ModelKey, _Installed] = {}
        self._misfits: set[ModelKey] = set()  # installed references already warned about

    @abc.abstractmethod
    def _freeze(self, version: VersionT, key: ModelKey, restoring: bool) -> None:
        """Derive what the tests need from the frozen reference (`restoring`: from state)."""

    @abc.abstractmethod
    def _step(
        self,
        record: TelemetryRecord,
        version: VersionT,
        values: tuple[float, ...],
        window: FloatArray,
    ) -> Alert | None:
        """One event after the freeze; `window` already holds `values`."""

    @abc.abstractmethod
    def _encode_extra(self, version: VersionT) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _decode_extra(self, version: VersionT, raw: dict[str, Any]) -> None: ...

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record in batch:
            self._versions.advance(record.timestamp)
            values = feature_vector(record)
            if values:
                alert = self._observe(record, values[: self._max_features])
                if alert is not None:
                    alerts.append(alert)
        self._versions.sweep()
        return alerts

    def set_reference(
        self,
        model_id: str,
        model_version: str,
        rows: list[tuple[float, ...]],
        as_of: float,
        names: list[str] | None = None,
    ) -> VersionT:
        """Freeze a reference for a version now (`as_of`: event time it counts as seen)."""
        key = (model_id, model_version)
        version = self._new_version(len(rows[0]), names, as_of)
        version.baseline.set_reference(key, [tuple(row) for row in rows])
        self._start_window(version, key, restoring=False)
        self._versions.put(key, version)
        return version

    def baseline_config(self) -> dict[str, Any]:
        return {
            "baseline_size": self._baseline_size,
            "max_features": self._max_features,
            "sample_every": self._sample_every,
        }

    def export_baselines(self) -> dict[ModelKey, Any]:
        exported = {}
        for key, version in self._versions.items():
            rows = version.baseline.reference(key)
            if rows is not None:
                encoded = _EncodedReference(names=version.names, rows=[pack_row(r) for r in rows])
                exported[key] = encoded.model_dump()
        return exported

    def install_baselines(self, baselines: Mapping[ModelKey, Any]) -> None:
        self._installed = decode_each(baselines, self._check_reference)
        self._misfits.clear()

    def _check_reference(self, raw: Any) -> _Installed:
        encoded = _EncodedReference.model_validate(raw)
        if len(encoded.rows) != self._baseline_size:
            raise ValueError(f"{len(encoded.rows)} rows, not baseline_size {self._baseline_size}")
        try:
            rows = [
                np.frombuffer(base64.b64decode(row, validate=True), "<f8") for row in encoded.rows
            ]
        except ValueError:  # binascii.Error included
            raise ValueError("a row is not base64 of little-endian float64 (`pack_row`)") from None
        dim = len(rows[0])
        if not 1 <= dim <= self._max_features or any(len(row) != dim for row in rows):
            raise ValueError(
                f"rows must all have the same number of features, 1 to max_features "
                f"{self._max_features} (found {sorted({len(row) for row in rows})})"
            )
        matrix = np.stack(rows).astype(np.float64)
        if not np.isfinite(matrix).all():
            raise ValueError("a row holds NaN or an infinity")
        if encoded.names is not None and (
            len(encoded.names) != dim or encoded.names != sorted(set(encoded.names))
        ):
            raise ValueError(f"names must be {dim} distinct names, sorted, one per feature")
        return _Installed(encoded.names, matrix)

    @property
    def tracked_versions(self) -> int:
        """Versions held in memory now."""
        return len(self._versions)

    def _new_version(self, dim: int, names: list[str] | None, ts: float) -> VersionT:
        baseline = Baselines(self._baseline_size, pack_row, unpack_row)
        return self._version_type(baseline, dim, names, ts)

    def _start_window(self, version: VersionT, key: ModelKey, restoring: bool) -> None:
        self._freeze(version, key, restoring)
        version.window = np.zeros((self._window_size, version.dim))

    def _take_up_installed(
        self, record: TelemetryRecord, key: ModelKey, values: tuple[float, ...]
    ) -> VersionT | None:
        """The version frozen on its installed reference, if it fits this record's features."""
        installed = self._installed[key]
        names = feature_names(record, self._max_features)
        if installed.rows.shape[1] == len(values) and installed.names == names:
            rows = [tuple(row) for row in installed.rows.tolist()]
            return self.set_reference(key[0], key[1], rows, record.timestamp, names)
        if key not in self._misfits:
            self._misfits.add(key)
            log.warning(
                "%s: the fitted reference of %s v%s has %d features %s, its traffic sends %d %s; "
                "learning this version's baseline online instead (refit the baseline file)",
                self.name,
                key[0],
                key[1],
                installed.rows.shape[1],
                installed.names or "(unnamed)",
                len(values),
                names or "(unnamed)",
            )
        return None

    def _observe(self, record: TelemetryRecord, values: tuple[float, ...]) -> Alert | None:
        key = (record.model_id, record.model_version)
        version = self._versions.get(key)
        if (
            self._installed
            and key in self._installed
            and (version is None or version.window is None)
        ):
            version = self._take_up_installed(record, key, values) or version
        if version is None:
            names = feature_names(record, self._max_features)
            version = self._new_version(len(values), names, record.timestamp)
            self._versions.put(key, version)
        version.last_ts = max(version.last_ts, record.timestamp)
        if len(values) != version.dim:
            version.skipped += 1
            return None
        if not sampled(record.event_id, self._sample_every, self._seed):
            return None
        version.recent_ids.append(record.event_id)
        window = version.window
        if window is None:
            version.baseline.observe(key, values)
            if version.baseline.reference(key) is not None:
                self._start_window(version, key, restoring=False)
            return None
        window[version.count % self._window_size] = values
        version.count += 1
        return self._step(record, version, values, window)

    def state_dict(self) -> dict[str, Any]:
        versions = []
        for (model_id, model_version), v in self._versions.items():
            common = {
                "dim": v.dim,
                "names": v.names,
                "last_ts": v.last_ts,
                "baseline": v.baseline.state_dict(),
                "window": None if v.window is None else pack(v.window),
                "count": v.count,
                "skipped": v.skipped,
                "recent_ids": list(v.recent_ids),
            }
            versions.append([model_id, model_version, common | self._encode_extra(v)])
        return {
            "version": _STATE_VERSION,
            "watermark": self._versions.encode_watermark(),
            "versions": versions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"{self.name} state version {state.get('version')!r} is unknown")
        self._versions.clear()
        self._versions.decode_watermark(state["watermark"])
        for model_id, model_version, raw in state["versions"]:
            key = (model_id, model_version)
            version = self._new_version(raw["dim"], raw["names"], raw["last_ts"])
            version.baseline.load_state_dict(raw["baseline"])
            if raw["window"] is not None:
                self._start_window(version, key, restoring=True)
                version.window = unpack(raw["window"], (self._window_size, version.dim))
            version.count = raw["count"]
            version.skipped = raw["skipped"]
            version.recent_ids.extend(raw["recent_ids"])
            self._decode_extra(version, raw)
            self._versions.put(key, version)
