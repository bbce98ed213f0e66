"""Baselines per model version: what "normal" looked like for one (model_id, model_version).

A detector that compares the present to a reference keeps one reference per model version, so
a rollout gets a baseline of its own instead of paging everyone because the new version
behaves differently. The reference is the version's first `size` observations (learned
online), or one fitted offline and loaded from a baseline file at start. While a version is
still learning, detectors that need its reference stay silent for it.

Baseline files (`mlwarden baseline fit`) let a listed version be tested from its first event:
no learning period, and an attacker already present at rollout cannot poison the baseline.
`fit_baselines` replays a recording through the `base.BaselineAware` detectors themselves and
keeps what each froze; `install_baseline_file` hands the file back to the same detectors. A
baseline is written as the detector's own encoding of the object it freezes online (the one
its `state_dict` holds), so a fitted baseline is a learned one and the paths cannot drift.

File format (JSON, `format_version` 1; `BaselineFile` is the schema)::

    {"format": "mlwarden.baselines", "format_version": 1,
     "fitted_at": "2026-05-01T12:00:00Z", "source": "benign.jsonl", "records": 120000,
     "detectors": {"prediction_drift": {"config": {"baseline_size": 3000, "max_classes": 256}},
                   ...},
     "versions": [{"model_id": "fraud", "model_version": "3", "records": 60000,
                   "first_timestamp": 1790000000.0, "last_timestamp": 1790003000.0,
                   "baselines": {"prediction_drift": <that detector's encoding>, ...}}]}

`detectors.<name>.config` holds the settings a baseline depends on (`baseline_config()`); a
run whose settings differ refuses the file and says how to refit. Each baseline holds exactly
`baseline_size` observations (for the feature detectors: sampled events, about
`baseline_size * sample_every` records); `records` counts the version's records in the
recording. The encodings: prediction_drift `[class counts, per-client class counts]` (client
ids replaced by ordinals: only the clustering matters); confidence_shift `[count, means,
stds, design effects]` of (top1, entropy, margin); feature_drift and mmd_drift
`{"names": feature names or null, "rows": [row, ...]}`, each row base64 of little-endian
float64 as in their state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mlwarden.detectors.base import BaselineAware, Detector, TelemetryBatch
from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord

ModelKey = tuple[str, str]
"""(model_id, model_version)"""

T = TypeVar("T")


def model_key(model_id: str, model_version: str) -> ModelKey:
    return (model_id, model_version)


class Baselines(Generic[T]):
    """The first `size` observations of each model version, frozen once complete.

    `encode`/`decode` turn one observation into JSON-able form and back, for `state_dict`.
    """

    def __init__(
        self,
        size: int,
        encode: Callable[[T], Any] = lambda item: item,
        decode: Callable[[Any], T] = lambda raw: raw,
    ) -> None:
        if size < 1:
            raise ValueError("a baseline needs at least one observation")
        self.size = size
        self._encode = encode
        self._decode = decode
        self._learning: dict[ModelKey, list[T]] = {}
        self._frozen: dict[ModelKey, list[T]] = {}

    def observe(self, key: ModelKey, item: T) -> bool:
        """Add `item` to the version's reference if it is still learning; True if it was."""
        if key in self._frozen:
            return False
        items = self._learning.setdefault(key, [])
        items.append(item)
        if len(items) >= self.size:
            self._frozen[key] = self._learning.pop(key)
        return True

    def reference(self, key: ModelKey) -> list[T] | None:
        """The frozen reference of a version, or None while it is still learning."""
        return self._frozen.get(key)

    def set_reference(self, key: ModelKey, items: list[T]) -> None:
        """Install a reference built elsewhere (a saved baseline file)."""
        self._learning.pop(key, None)
        self._frozen[key] = list(items)

    def frozen_keys(self) -> Iterator[ModelKey]:
        return iter(self._frozen)

    def state_dict(self) -> dict[str, Any]:
        def encode(table: dict[ModelKey, list[T]]) -> list[Any]:
            return [[m, v, [self._encode(i) for i in items]] for (m, v), items in table.items()]

        return {"learning": encode(self._learning), "frozen": encode(self._frozen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def decode(rows: list[Any]) -> dict[ModelKey, list[T]]:
            return {(m, v): [self._decode(i) for i in items] for m, v, items in rows}

        self._learning = decode(state["learning"])
        self._frozen = decode(state["frozen"])


FORMAT: Final = "mlwarden.baselines"
FORMAT_VERSION: Final = 1
_ERRORS_SHOWN = 5

ConfigValue = StrictBool | StrictInt | StrictFloat | StrictStr | None


class DetectorBaselines(BaseModel):
    """What a file says about one detector's baselines as a whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: dict[str, ConfigValue] = Field(
        description="The detector settings its baselines depend on, as fitted."
    )


class VersionBaselines(BaseModel):
    """The baselines of one (model_id, model_version), by detector name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    records: int = Field(ge=0, description="Records of this version in the recording.")
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    baselines: dict[str, Any] = Field(
        description="Detector name -> that detector's encoding of its frozen baseline."
    )


class BaselineFile(BaseModel):
    """A versioned file of per-model-version baselines, fitted by `mlwarden baseline fit`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: StrictStr
    format_version: StrictInt
    fitted_at: datetime
    source: str = Field(description="The recording the baselines were fitted on.")
    records: int = Field(ge=0, description="Records replayed.")
    detectors: dict[str, DetectorBaselines]
    versions: list[VersionBaselines]

    @field_validator("format")
    @classmethod
    def _is_a_baseline_file(cls, value: str) -> str:
        if value != FORMAT:
            raise ValueError(f"{value!r} is not {FORMAT!r}: not a baseline file")
        return value

    @field_validator("format_version")
    @classmethod
    def _readable_version(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(
                f"format version {value} is not the one this mlwarden reads ({FORMAT_VERSION}); "
                "refit the file with this mlwarden (`mlwarden baseline fit`)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BaselineFile:
        seen: set[ModelKey] = set()
        for index, entry in enumerate(self.versions):
            key = (entry.model_id, entry.model_version)
            if key in seen:
                raise ValueError(f"versions[{index}]: {key[0]} v{key[1]} is listed twice")
            seen.add(key)
            unlisted = sorted(set(entry.baselines) - set(self.detectors))
            if unlisted:
                raise ValueError(
                    f"versions[{index}].baselines: {', '.join(unlisted)} not under `detectors`"
                )
        return self

    def baselines_of(self, detector: str) -> dict[ModelKey, Any]:
        """Every version's baseline for `detector`, by (model_id, model_version)."""
        return {
            (entry.model_id, entry.model_version): entry.baselines[detector]
            for entry in self.versions
            if detector in entry.baselines
        }


def validation_message(error: ValueError) -> str:
    """One line for a (pydantic) validation error: `field.path: problem; ...`."""
    if not isinstance(error, ValidationError):
        return str(error)
    parts = []
    for item in error.errors(include_url=False)[:_ERRORS_SHOWN]:
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{path.lstrip('.')}: {message}" if path else message)
    hidden = error.error_count() - _ERRORS_SHOWN
    return "; ".join(parts) + (f" (and {hidden} more)" if hidden > 0 else "")


def decode_each(baselines: Mapping[ModelKey, Any], decode: Callable[[Any], T]) -> dict[ModelKey, T]:
    """Each version's encoded baseline through a detector's checking `decode`; its ValueError
    (a pydantic ValidationError included) comes back as one line naming the version."""
    decoded = {}
    for (model_id, model_version), raw in baselines.items():
        try:
            decoded[(model_id, model_version)] = decode(raw)
        except ValueError as error:
            raise ValueError(f"{model_id} v{model_version}: {validation_message(error)}") from None
    return decoded


def load_baseline_file(path: Path) -> BaselineFile:
    """Parse and validate a baseline file; ConfigError naming the file and the problem."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the baseline file: {error.strerror}") from None
    try:
        return BaselineFile.model_validate_json(raw)
    except ValidationError as error:
        raise ConfigError(
            f"{path}: not a valid baseline file: {validation_message(error)}"
        ) from None


def _mismatch(name: str, fitted: Mapping[str, Any], running: Mapping[str, Any]) -> str | None:
    """Why a file fitted with `fitted` settings cannot serve a detector running `running`."""
    differing = [key for key in sorted({*fitted, *running}) if fitted.get(key) != running.get(key)]
    if not differing:
        return None
    was = ", ".join(f"{key}={fitted.get(key)!r}" for key in differing)
    now = ", ".join(f"{key}={running.get(key)!r}" for key in differing)
    variables = ", ".join(f"MLWARDEN_DETECTORS__{name}__{key}".upper() for key in differing)
    return (
        f"{name} baselines were fitted with {was}, this run has {now}. Refit them under this "
        "run's settings (`mlwarden baseline fit TELEMETRY.jsonl --out FILE`), or set "
        f"{variables} back to the fitted values"
    )


def install_baseline_file(
    detectors: Mapping[str, Detector],
    baselines: BaselineFile,
    source: Path | str,
    registered: Collection[str],
) -> list[str]:
    """Install a file's baselines in `detectors` (the enabled ones); the names installed.

    Sections of registered but disabled detectors are skipped. A detector checks all of its
    baselines before it takes any; every problem is a ConfigError naming `source`, after which
    the pipeline must not be used (it is being built, so nothing has run on it).
    """
    installed = []
    for name, section in baselines.detectors.items():
        if name not in registered:
            raise ConfigError(
                f"{source}: detectors.{name}: no such detector (known: {', '.join(registered)})"
            )
        detector = detectors.get(name)
        if detector is None:
            continue
        if not isinstance(detector, BaselineAware):
            raise ConfigError(
                f"{source}: detectors.{name}: this detector takes no fitted baselines"
            )
        mismatch = _mismatch(name, section.config, detector.baseline_config())
        if mismatch is not None:
            raise ConfigError(f"{source}: {mismatch}")
        try:
            detector.install_baselines(baselines.baselines_of(name))
        except ValueError as error:
            raise ConfigError(f"{source}: {name} baseline of {error}") from None
        installed.append(name)
    return installed


@dataclass(frozen=True, slots=True)
class FitResult:
    baselines: BaselineFile
    unfitted: dict[ModelKey, int]
    """Versions no detector froze a baseline for, with their record counts."""


def fit_baselines(
    detectors: Mapping[str, Detector],
    records: Sequence[TelemetryRecord],
    *,
    source: str,
    fitted_at: datetime,
    batch_size: int = 500,
) -> FitResult:
    """Replay `records` (event-time order) through each baseline-aware detector and keep, per
    version, the first baseline it froze; the records of a version go no further once its
    baseline is kept. Alerts are dropped: only the baselines matter here.
    """
    aware = {name: d for name, d in detectors.items() if isinstance(d, BaselineAware)}
    kept: dict[str, dict[ModelKey, Any]] = {name: {} for name in aware}
    spans: dict[ModelKey, list[float]] = {}  # records, first and last timestamp
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        for record in batch:
            span = spans.setdefault((record.model_id, record.model_version), [0, record.timestamp])
            span[0] += 1
            span[2:] = [record.timestamp]
        for name, detector in aware.items():
            done = kept[name]
            todo = [r for r in batch if (r.model_id, r.model_version) not in done]
            if not todo:
                continue
            detector.update(TelemetryBatch(todo))
            for key, baseline in detector.export_baselines().items():
                done.setdefault(key, baseline)
    versions = [
        VersionBaselines(
            model_id=key[0],
            model_version=key[1],
            records=int(span[0]),
            first_timestamp=span[1],
            last_timestamp=span[2],
            baselines={name: kept[name][key] for name in aware if key in kept[name]},
        )
        for key, span in spans.items()
        if any(key in kept[name] for name in aware)
    ]
    fitted = {(v.model_id, v.model_version) for v in versions}
    return FitResult(
        BaselineFile(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            fitted_at=fitted_at,
            source=source,
            records=len(records),
            detectors={
                name: DetectorBaselines(config=detector.baseline_config())
                for name, detector in aware.items()
            },
            versions=versions,
        ),
        {key: int(span[0]) for key, span in spans.items() if key not in fitted},
    )
