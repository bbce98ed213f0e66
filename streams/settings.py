"""All configuration of mlwarden, in one place: environment variables prefixed `MLWARDEN_`.

Nested fields use `__`: `MLWARDEN_KAFKA__BOOTSTRAP=kafka-1:9092`,
`MLWARDEN_DETECTORS__QUERY_BUDGET__RATE_PER_MINUTE=120`, and mappings take JSON:
`MLWARDEN_DETECTORS__QUERY_BUDGET__MODELS='{"llm-chat": {"rate_per_minute": 30, "burst": 10}}'`.
Nothing else in mlwarden reads the environment. Every credential is a `SecretStr`, so it prints
as `**********` in `mlwarden config show`, logs and alerts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlwarden.detectors.registry import DetectorSuiteConfig
from mlwarden.responders.evidence.settings import EvidenceSettings
from mlwarden.responders.paging_settings import PagingSettings
from mlwarden.responders.rate_limit import RateLimitSettings
from mlwarden.responders.rollback import RegistrySettings
from mlwarden.streams.decode import DEFAULT_MAX_RECORD_BYTES


class TopicNames(BaseModel):
    """Kafka topic names; change them to share one cluster between environments."""

    model_config = ConfigDict(extra="forbid")

    telemetry: str = "mlwarden.telemetry"
    dead_letters: str = "mlwarden.telemetry.dlq"
    alerts: str = "mlwarden.alerts"
    actions: str = "mlwarden.actions"
    controls: str = "mlwarden.controls"
    incidents: str = "mlwarden.incidents"
    """Compacted: the latest summary of every incident, keyed by incident id (for the CLI)."""
    commands: str = "mlwarden.commands"
    """Human decisions for the engine: approve, reject, resolve, silence."""


class KafkaSettings(BaseModel):
    """Where the broker is and how the worker's consumer group behaves."""

    model_config = ConfigDict(extra="forbid")

    bootstrap: str = Field(default="127.0.0.1:9092", description="host:port[,host:port…]")
    topics: TopicNames = Field(default_factory=TopicNames)
    partitions: int = Field(default=8, ge=1, description="Partitions of topics mlwarden creates.")
    replication_factor: int = Field(default=1, ge=1)
    producer_batch_bytes: int = Field(
        default=16384,
        ge=1,
        description="Batch size of the worker's producer (alerts, dead letters, changelogs). "
        "Set 1 on Tansu 0.6: it reports a partition's end as its last batch's base offset + 1, "
        "so table recovery stops short of multi-record batches (the embedded broker paths "
        "set this themselves).",
    )
    # Short group timeouts: a dead worker's partitions move within seconds, and the defaults
    # (300 s max poll) make group joins hang on small brokers such as Tansu.
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    max_poll_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest gap between the worker's polls before it leaves the group and its "
        "partitions move. A poll returns at most one batch (worker.batch_size records), so a "
        "gap is about one batch's detection: keep this well above that under load. A worker "
        "that goes over rejoins once its batch is done (see streams/faust_transport).",
    )
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        description="Longest the broker may hold the worker's fetch while no record is there "
        "(Faust itself fixes 1500 ms; see streams/faust_transport). Tansu, the embedded broker, "
        "looks for new records only at 1/2, 3/4, 7/8… of this wait, so an alert can sit for "
        "half of it: 20 ms picks alerts up within about 10 ms, at the cost of 50 idle fetches "
        "a second. Real Kafka answers as soon as a record arrives: there, 500 (Kafka's own "
        "default) is as fast and polls less.",
    )


class WorkerSettings(BaseModel):
    """The stream worker's batching and identity."""

    model_config = ConfigDict(extra="forbid")

    app_id: str = Field(default="mlwarden-worker", description="Consumer group and table prefix.")
    batch_size: int = Field(default=2000, ge=1, description="Records handed to detectors at once.")
    batch_wait_s: float = Field(default=0.2, gt=0, description="Longest wait to fill a batch.")
    commit_interval_s: float = Field(
        default=2.8, gt=0, description="How often consumed offsets are committed (Faust default)."
    )
    max_record_bytes: int = Field(default=DEFAULT_MAX_RECORD_BYTES, ge=256)
    data_dir: Path = Field(default=Path(".mlwarden"), description="Faust's local state folder.")
    torch_threads: int = Field(
        default=1,
        ge=1,
        description="Threads torch may use (MMD drift). Detection runs in one event loop; more "
        "threads only contend with it (measured: 2 threads on a busy 2-core box, 25x slower).",
    )
    web_port: int = Field(default=6066, ge=0, description="Faust's web server (0 = disabled).")
    stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Records waiting on a partition the worker holds and its committed offset "
        "unmoved for this long: the worker exits with code 75 for its supervisor to restart "
        "it (see streams/watchdog). Keep it well above commit_interval_s.",
    )


class PlaybookSettings(BaseModel):
    """Where playbooks come from; empty means the library shipped with mlwarden."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None


class Settings(BaseSettings):
    """Everything configurable, resolved from defaults, then `.env`, then the environment."""

    model_config = SettingsConfigDict(
        env_prefix="MLWARDEN_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    detectors: DetectorSuiteConfig = Field(default_factory=DetectorSuiteConfig)
    playbooks: PlaybookSettings = Field(default_factory=PlaybookSettings)
    paging: PagingSettings = Field(default_factory=PagingSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    log_level: str = "INFO"

    def masked(self) -> dict[str, Any]:
        """JSON-able view with every secret shown as `**********` (SecretStr's own mask)."""
        shown: dict[str, Any] = json.loads(self.model_dump_json())
        return shown
