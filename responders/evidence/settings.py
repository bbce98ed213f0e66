"""Where evidence goes: `EvidenceSettings`, nested in mlwarden's Settings as `evidence`.

`MLWARDEN_EVIDENCE__BACKEND=elasticsearch`, `MLWARDEN_EVIDENCE__ELASTICSEARCH_URL=…`, … The
default is the embedded SQLite file, so the demo and a single node need nothing running.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class EvidenceBackend(StrEnum):
    SQLITE = "sqlite"
    ELASTICSEARCH = "elasticsearch"


class EvidenceSettings(BaseModel):
    """The evidence store and, for Elasticsearch, its templates and Kibana objects."""

    model_config = ConfigDict(extra="forbid")

    backend: EvidenceBackend = EvidenceBackend.SQLITE
    sqlite_path: Path = Field(default=Path(".mlwarden/evidence.sqlite3"))
    elasticsearch_url: str = Field(default="http://127.0.0.1:9200")
    api_key: SecretStr | None = Field(
        default=None, description="Elasticsearch API key (base64 `id:key`, as Kibana shows it)."
    )
    plain_json_media_type: bool = Field(
        default=False,
        description="Send plain `application/json` instead of elasticsearch-py 9's "
        "`compatible-with=9` media types. Only for servers that refuse the latter "
        "(OpenSearch-compatible test servers); Elasticsearch 8/9 keeps the default.",
    )
    data_stream: str = Field(
        default="logs-mlwarden.evidence-default",
        pattern=r"^logs-mlwarden\.evidence-[a-z0-9_]+$",
        description="Data stream (or index) the documents go to; the suffix is the namespace.",
    )
    use_data_stream: bool = Field(
        default=True,
        description="Install the index template as a data stream template. False for servers "
        "without data streams (OpenSearch-compatible test servers): a plain index then.",
    )
    install_ilm: bool = Field(
        default=True, description="`evidence setup` installs the ILM policy (Elasticsearch only)."
    )
    request_timeout_s: float = Field(default=10.0, gt=0)
    spool_dir: Path = Field(
        default=Path(".mlwarden/evidence-spool"),
        description="Where evidence waits while Elasticsearch is unreachable.",
    )
    kibana_url: str | None = Field(
        default=None, description="Kibana base URL; `evidence setup` imports the saved objects."
    )
