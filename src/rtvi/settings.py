"""Every environment variable the services read, typed, with the reference's defaults (spec §8).

One place: `Settings` is the one reader of the environment (flat fields, one per variable). Where our
default differs from the reference, the field's comment says why. Components do not receive it whole:
each gets its group, a frozen view of the fields it reads (`settings.storage`, `.ingest`, `.live`, `.bus`,
`.index`, `.cluster`, `.vlm`, `.model`); only the composition root (ServiceCore, the HTTP app, the CLI)
holds the whole object. A group's fields carry the flat fields' names, so a group is built from them and
a value read from the environment arrives in every group that holds it. The few fields no component
reads as a group are listed in SERVICE_WIDE.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def csv_set(value: str) -> frozenset[str]:
    """A comma-separated setting as a set of lower-case, stripped, non-empty items."""
    return frozenset(item.strip().lower() for item in value.split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class HostAllowlist:
    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, spec: str) -> HostAllowlist | None:
        names: set[str] = set()
        networks = []
        for item in (s.strip().lower() for s in spec.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if "/" in item or not item.replace("-", "").replace(".", "").isalnum():
                    raise ValueError(f"not a host name, address or network: {item!r}") from None
                names.add(item)
        return cls(frozenset(names), tuple(networks)) if names or networks else None


# --- groups: what each component reads ----------------------------------------------------------
# Frozen: built once from the flat fields, at start-up. Nothing changes a setting at run time; what
# POST /v1/config switches (the results and error bus and topics) is the MessagePublisher's own state.


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    """Where assets live and for how long: the AssetStore (core/assets/store.py) and its expiry sweep."""

    asset_storage_dir: Path
    max_asset_storage_size_gb: float | None
    asset_max_age_hours: float
    asset_store: str
    asset_cache_gb: float
    asset_orphan_grace_s: float
    asset_eviction_interval_s: float
    s3_endpoint_url: str
    secret_key: str = field(repr=False)
    database_url: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestSettings:
    """How media comes in: the RemoteFetcher's downloads (core/assets/remote.py), and the AssetStore's
    server paths (FILE_URL_ALLOWED_DIRS) and media verification."""

    asset_download_max_file_size_gb: float
    asset_download_total_timeout_s: float
    asset_download_connect_timeout_s: float
    asset_download_max_redirects: int
    asset_download_allowed_private_hosts: str
    asset_download_ssl_skip_verify_domains: str
    asset_download_auth_tokens: str = field(repr=False)
    s3_endpoint_url: str
    file_url_allowed_dirs: str
    skip_media_verification: bool

    @property
    def allowed_private_download_hosts(self) -> frozenset[str]:
        return csv_set(self.asset_download_allowed_private_hosts)

    @property
    def allowed_local_dirs(self) -> list[Path]:
        return [Path(os.path.realpath(d.strip())) for d in self.file_url_allowed_dirs.split(",") if d.strip()]


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSettings:
    """Cameras and live jobs: LiveManager and rtsp_options (core/pipeline/live_jobs.py), LiveStreams
    (core/streams.py: allowed hosts, the registration probe, deletion)."""

    rtsp_timeout_ms: int
    rtsp_reconnection_interval_s: float
    rtsp_reconnection_window_s: float
    rtsp_reconnection_max_attempts: int
    rtsp_transport: Literal["tcp", "udp"]
    rtsp_open_timeout_s: float
    rtsp_allowed_hosts_list: str
    stream_delete_drain_timeout_s: float
    stream_delete_blocking_timeout_s: float
    live_pending_chunks: int
    live_subscriber_queue: int
    live_frame_pick: Literal["keyframe", "exact"]
    skip_media_verification: bool  # no probe of the camera at registration

    @property
    def rtsp_allowed_hosts(self) -> HostAllowlist | None:
        return HostAllowlist.parse(self.rtsp_allowed_hosts_list)


@dataclass(frozen=True, slots=True, kw_only=True)
class BusSettings:
    """The message bus as configured at start-up: MessagePublisher (core/bus/publisher.py) and the Kafka
    and Redis sinks it builds. POST /v1/config switches the publisher's routes, not these values."""

    message_bus: Literal["kafka", "redis", ""]
    kafka_enabled: bool | None
    message_bus_topic: str
    kafka_bootstrap_servers: str
    kafka_queue_maxsize: int
    kafka_message_timeout_ms: int
    kafka_enable_idempotence: bool
    kafka_incident_topic: str
    enable_kafka_messages_for_text_input: bool
    error_bus: Literal["kafka", "redis", ""]
    error_message_topic: str
    enable_redis_error_messages: bool
    redis_host: str
    redis_port: int
    redis_db: int
    redis_password: str = field(repr=False)
    redis_payload_key: str
    redis_stream_maxlen: int
    redis_queue_maxsize: int
    replica_id: str  # the rtvi-replica header


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexSettings:
    """The search index (core/index): whether chunks are indexed, and on which backend."""

    search_index: bool
    milvus_uri: str = field(repr=False)
    milvus_token: str = field(repr=False)
    milvus_index: Literal["HNSW", "IVF_FLAT", "FLAT"] = "HNSW"
    # With Milvus, thumbnails go to the asset store's bucket when it is S3 (else on this machine's disk).
    asset_store: str = ""
    s3_endpoint_url: str = ""
    index_retention_hours: float = 0.0
    index_retention_by_stream: dict[str, float] = field(default_factory=dict)
    index_thumbnail_retention_hours: float = 0.0
    index_max_gb: float = 0.0
    index_retention_interval_s: float = 60.0
    index_ann_from: int = 200_000
    index_ann_nprobe: int = 32
    index_ann_candidates: int = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSettings:
    """Scale-out: StreamOwnership (core/cluster.py), which replica runs which camera."""

    cluster_bootstrap: str
    cluster_topic: str
    cluster_partitions: int
    cluster_session_timeout_ms: int
    replica_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentPlaceSettings:
    """Where incidents happen and which detector raises them (core/bus/incidents.py Place,
    AnalyticsModule): part of the groups of those who publish nv.Incident."""

    incident_priority: str
    place_name: str
    place_type: str
    place_lat: float
    place_lon: float
    place_alt: float
    place_coordinate_x: float
    place_coordinate_y: float
    analytics_module_id: str
    analytics_module_description: str
    analytics_module_source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VlmSettings(IncidentPlaceSettings):
    """The VLM service's serving (services/vlm/serving.py, chat.py): request limits and defaults, and
    the place and detector its incidents name (core/bus/incidents.py Place, AnalyticsModule)."""

    vlm_prompt_max_length: int
    vlm_system_prompt_max_length: int
    vlm_max_generation_tokens: int
    vlm_system_prompt: str
    vlm_default_frames: float
    vlm_supports_audio: bool
    vlm_max_model_len: int
    vlm_input_width: int
    vlm_input_height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings(IncidentPlaceSettings):
    """Text alert rules on the embedding stream (core/alerts, docs/alerts.md): where their incidents may
    be delivered, the VLM that verifies candidates, and the bounds of what they keep. The place and
    detector fields name the nv.Incident they publish, as the VLM service's do."""

    alert_allowed_hosts: str
    alert_vlm_url: str
    alert_vlm_model: str
    alert_vlm_api_key: str = field(repr=False)
    alert_vlm_timeout_s: float
    alert_mqtt_url: str = field(repr=False)
    alert_webhook_retries: int
    alert_webhook_timeout_s: float
    alert_max_incidents: int
    alert_rules_refresh_s: float
    alert_calibration_window: int
    alert_warmup_chunks: int
    alert_calibration_save_s: float = 30.0
    alert_public_url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSettings:
    """Which model a service loads and how: the model registries (services/*/models/registry.py), the
    model sources (core/models/source.py) and the bundled model (core/models/bundled.py). Its own group,
    not the whole Settings: about a quarter of the variables, none of them anyone else's."""

    model_path: str = field(repr=False)
    model_to_use: str
    remote_embed_endpoint: str
    remote_embed_model_name: str
    remote_embed_api_key: str = field(repr=False)
    remote_embed_timeout_s: float
    remote_embed_batch_size: int
    batch_size: int
    hf_token: str = field(repr=False)
    ngc_api_key: str = field(repr=False)
    openai_api_key: str = field(repr=False)
    nvidia_api_key: str = field(repr=False)
    model_cache_dir: Path
    trust_remote_code: bool | None
    device: str
    detect_people: bool
    onnx_runtime: bool
    warm_up: bool = True
    vlm_endpoint: str
    vlm_api_key: str = field(repr=False)
    vlm_endpoint_model: str
    vlm_endpoint_timeout_s: float
    vlm_endpoint_max_retries: int
    vlm_concurrency: int

    @property
    def uses_bundled_model(self) -> bool:
        """MODEL_PATH empty or `bundled`: the model that ships with rtvi (no download, no GPU)."""
        return self.model_path.strip().lower() in ("", "bundled")

    @property
    def endpoint_api_key(self) -> str:
        """The OpenAI-compatible VLM endpoint's key: VIA_VLM_API_KEY, else OPENAI_API_KEY (the reference
        compose's placeholder NOAPIKEYSET means none), else NVIDIA_API_KEY."""
        openai_key = "" if self.openai_api_key == "NOAPIKEYSET" else self.openai_api_key
        return self.vlm_api_key or openai_key or self.nvidia_api_key

    @property
    def auto_batch_size(self) -> int:
        if self.batch_size > 0:
            return self.batch_size
        try:
            import torch

            if torch.cuda.is_available():
                gib = torch.cuda.get_device_properties(0).total_memory / 2**30
                return 2 if gib < 16 else 64 if gib > 80 else 16 if gib > 46 else 4
        except Exception:  # pragma: no cover - torch import problems fall back to the CPU default
            pass
        return 4


GROUPS: dict[str, type[DataclassInstance]] = {
    "storage": StorageSettings,
    "ingest": IngestSettings,
    "live": LiveSettings,
    "bus": BusSettings,
    "index": IndexSettings,
    "cluster": ClusterSettings,
    "vlm": VlmSettings,
    "model": ModelSettings,
    "alerts": AlertSettings,
}

# Read by no component as a group: the composition root (CLI, HTTP app, ServiceCore) uses them itself.
SERVICE_WIDE = frozenset(
    {
        "backend_host",  # the CLI: where to listen
        "backend_port",
        "log_level",
        "api_key",  # the HTTP app: bearer-token auth
        "max_request_body_mb",  # the HTTP app: body limits
        "max_upload_size_gb",
        "enable_otel_monitoring",  # the HTTP app: tracing
        "hwaccel",  # ServiceCore: how its file jobs decode
        "force_sw_av1_decoder",
    }
)


class Settings(BaseSettings):
    # An empty variable means the default, for every setting: the reference's compose files pass
    # `VAR: "${VAR:-}"`, so an unset host variable arrives as "" (docs/compatibility.md).
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=True, extra="ignore", env_ignore_empty=True
    )

    # --- core -----------------------------------------------------------------------------------
    backend_host: str = Field("127.0.0.1", validation_alias="BACKEND_HOST")
    backend_port: int = Field(8000, validation_alias="BACKEND_PORT", ge=1, le=65535)
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    # Bearer token; when set every /v1 route except health/info requires it (the reference declares
    # but never enforces auth).
    api_key: str = Field("", validation_alias="RTVI_API_KEY")

    # --- model ----------------------------------------------------------------------------------
    # Empty or "bundled" = the bundled offline model (the reference defaults to git:https://huggingface.co/
    # nvidia/Cosmos-Embed1-448p, which cannot be fetched on an offline machine). Never logged: a git: URL
    # may carry a token.
    model_path: str = Field("", validation_alias="MODEL_PATH", repr=False)
    # Which backend: "custom"/"" = detect from MODEL_PATH; or bundled | clip | cosmos-embed1 | remote.
    model_to_use: str = Field("custom", validation_alias="VLM_MODEL_TO_USE")
    remote_embed_endpoint: str = Field("", validation_alias="REMOTE_EMBED_ENDPOINT")
    remote_embed_model_name: str = Field(
        "nvidia/cosmos-embed1", validation_alias="REMOTE_EMBED_ENDPOINT_MODEL_NAME"
    )
    remote_embed_api_key: str = Field("", validation_alias="REMOTE_EMBED_ENDPOINT_API_KEY")
    remote_embed_timeout_s: float = Field(300, validation_alias="REMOTE_EMBED_ENDPOINT_TIMEOUT_SEC", gt=0)
    remote_embed_batch_size: int = Field(64, validation_alias="REMOTE_EMBED_ENDPOINT_BATCH_SIZE", ge=1)
    # Frames of this many chunks (from any number of concurrent requests) go into one model call.
    # 0 = auto (spec: by GPU memory; 4 on CPU).
    batch_size: int = Field(0, validation_alias="VLM_BATCH_SIZE", ge=0)
    hf_token: str = Field("", validation_alias="HF_TOKEN", repr=False)
    ngc_api_key: str = Field("", validation_alias=AliasChoices("NGC_API_KEY", "NVIDIA_API_KEY"), repr=False)
    # The reference's keys for hosted endpoints: the VLM endpoint's key falls back to OPENAI_API_KEY, then
    # NVIDIA_API_KEY (seed 002's NIM and GPT-4o examples); the remote embedder's to NVIDIA_API_KEY.
    openai_api_key: str = Field("", validation_alias="OPENAI_API_KEY", repr=False)
    nvidia_api_key: str = Field("", validation_alias="NVIDIA_API_KEY", repr=False)
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "rtvi" / "models",
        validation_alias=AliasChoices("NGC_MODEL_CACHE", "MODEL_ROOT_DIR"),
    )
    # Run Python code shipped with a checkpoint. Unset: refused for VLM checkpoints (the reference's
    # VLM_TRUST_REMOTE_CODE defaults to false); allowed for a cosmos-embed1 checkpoint, which is nothing
    # but such code (the reference embed service always runs it).
    trust_remote_code: bool | None = Field(
        None, validation_alias=AliasChoices("VLM_TRUST_REMOTE_CODE", "RTVI_TRUST_REMOTE_CODE")
    )
    device: str = Field("auto", validation_alias="RTVI_DEVICE")  # auto | cpu | cuda | cuda:N
    # The bundled model's person detector (people concepts); off saves its per-frame pass (docs/models.md).
    detect_people: bool = Field(True, validation_alias="RTVI_DETECT_PEOPLE")
    # On the CPU the bundled model's image networks run in ONNX Runtime (exported once into the model
    # cache); false keeps them in torch (docs/models.md).
    onnx_runtime: bool = Field(True, validation_alias="RTVI_ONNX_RUNTIME")
    # The embedding model runs its largest batch once before serving, so its memory is what it will
    # stay at (a runtime's arena keeps its largest size); false: it grows with the first large batch.
    warm_up: bool = Field(True, validation_alias="RTVI_WARM_UP")
    # Every embedded chunk into the search index (POST /v1/search); false: no index, search answers 503.
    search_index: bool = Field(True, validation_alias="RTVI_SEARCH_INDEX")
    # The index on Milvus (http://host:19530, or a Milvus Lite file), shared by replicas; empty: SQLite
    # under ASSET_STORAGE_DIR/index. The token ("user:password" or an API key) is never logged.
    milvus_uri: str = Field("", validation_alias="MILVUS_URI", repr=False)
    milvus_token: str = Field("", validation_alias="MILVUS_TOKEN", repr=False)
    # The vector index of a new Milvus collection (docs/search.md): HNSW, IVF_FLAT or FLAT (exact).
    milvus_index: Literal["HNSW", "IVF_FLAT", "FLAT"] = Field("HNSW", validation_alias="RTVI_MILVUS_INDEX")
    # Retention of live chunks in the index (docs/search.md): older than this many hours, they leave it
    # (0 = keep); and, on SQLite, the index's footprint on disk (rows, vectors, thumbnails) is kept under
    # this many GB by removing the oldest live chunks (0 = unlimited). Files' chunks follow their asset.
    index_retention_hours: float = Field(0, validation_alias="RTVI_INDEX_RETENTION_HOURS", ge=0)
    # Streams that keep their chunks longer or shorter: a JSON object {"stream id": hours} (0 = keep).
    index_retention_by_stream: dict[str, float] = Field({}, validation_alias="RTVI_INDEX_RETENTION_BY_STREAM")
    # Live chunks' thumbnails may go before their entries (0: they stay as long as the entry): an old hit
    # is still found and played from its times, without a picture.
    index_thumbnail_retention_hours: float = Field(
        0, validation_alias="RTVI_INDEX_THUMBNAIL_RETENTION_HOURS", ge=0
    )
    index_max_gb: float = Field(0, validation_alias="RTVI_INDEX_MAX_GB", ge=0)
    # How often the index thread applies them (in bounded batches between writes).
    index_retention_interval_s: float = Field(60, validation_alias="RTVI_INDEX_RETENTION_INTERVAL_S", gt=0)
    # SQLite: from this many chunks a collection is searched through an ANN index (compressed codes in
    # memory, exact re-rank of the candidates) instead of every vector in memory; 0 = always exact.
    # nprobe (cells scanned) and candidates (re-ranked) trade speed for recall (docs/search.md).
    index_ann_from: int = Field(200_000, validation_alias="RTVI_INDEX_ANN_FROM", ge=0)
    index_ann_nprobe: int = Field(32, validation_alias="RTVI_INDEX_ANN_NPROBE", ge=1, le=4096)
    index_ann_candidates: int = Field(300, validation_alias="RTVI_INDEX_ANN_CANDIDATES", ge=10, le=100_000)

    # --- VLM service (spec §4.7, §6.4, §8) -------------------------------------------------------
    # An OpenAI-compatible endpoint (vLLM, NIM, Ollama, OpenAI): with VLM_MODEL_TO_USE=openai-compat, or
    # "custom" with no MODEL_PATH, captions come from there.
    vlm_endpoint: str = Field("", validation_alias="VIA_VLM_ENDPOINT")
    vlm_api_key: str = Field("", validation_alias="VIA_VLM_API_KEY", repr=False)
    # The endpoint's model name; empty = the first model its /models lists.
    vlm_endpoint_model: str = Field("", validation_alias="VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME")
    vlm_endpoint_timeout_s: float = Field(300, validation_alias="VIA_VLM_ENDPOINT_TIMEOUT_SEC", gt=0)
    vlm_endpoint_max_retries: int = Field(3, validation_alias="VIA_VLM_ENDPOINT_MAX_RETRIES", ge=0)
    vlm_prompt_max_length: int = Field(10240, validation_alias="VLM_PROMPT_MAX_LENGTH", ge=1)
    vlm_system_prompt_max_length: int = Field(10240, validation_alias="VLM_SYSTEM_PROMPT_MAX_LENGTH", ge=1)
    vlm_max_generation_tokens: int = Field(16384, validation_alias="VLM_MAX_GENERATION_TOKENS", ge=1)
    vlm_system_prompt: str = Field("", validation_alias="VLM_SYSTEM_PROMPT")
    vlm_default_frames: float = Field(
        30, validation_alias="VLM_DEFAULT_NUM_FRAMES_PER_SECOND_OR_FIXED_FRAMES_CHUNK", gt=0
    )
    vlm_supports_audio: bool = Field(False, validation_alias="VLM_MODEL_SUPPORTS_AUDIO")
    vlm_max_model_len: int = Field(32768, validation_alias="VLM_MAX_MODEL_LEN", ge=256)
    # The frame size sent to the VLM when a request sets no vlm_input_width/height (0 = as sampled).
    vlm_input_width: int = Field(0, validation_alias="VLM_INPUT_WIDTH", ge=0, le=4096)
    vlm_input_height: int = Field(0, validation_alias="VLM_INPUT_HEIGHT", ge=0, le=4096)
    # Chunks captioned at once per model call (local backends) or in flight (endpoint); 0 = auto.
    vlm_concurrency: int = Field(0, validation_alias="NUM_VLM_PROCS", ge=0)
    kafka_incident_topic: str = Field("mdx-vlm-incidents", validation_alias="KAFKA_INCIDENT_TOPIC")
    # Incident.info.priority (seed 002's example: "high").
    incident_priority: str = Field("high", validation_alias="INCIDENT_PRIORITY")
    # Where an incident happened when the stream has no place_* fields (spec §6.4 defaults).
    place_name: str = Field("Dock Entrance-East", validation_alias="PLACE_NAME")
    place_type: str = Field("warehouse-bay", validation_alias="PLACE_TYPE")
    place_lat: float = Field(37.3706, validation_alias="PLACE_LAT")
    place_lon: float = Field(-121.9672, validation_alias="PLACE_LON")
    place_alt: float = Field(0.0, validation_alias="PLACE_ALT")
    place_coordinate_x: float = Field(12.5, validation_alias="PLACE_COORDINATE_X")
    place_coordinate_y: float = Field(4.2, validation_alias="PLACE_COORDINATE_Y")
    analytics_module_id: str = Field("vlm-activity-detector", validation_alias="ANALYTICS_MODULE_ID")
    analytics_module_description: str = Field(
        "RTVI Safety Compliance Detector", validation_alias="ANALYTICS_MODULE_DESCRIPTION"
    )
    analytics_module_source: str = Field("rtvi-vlm", validation_alias="ANALYTICS_MODULE_SOURCE")

    # --- alert rules (docs/alerts.md) ------------------------------------------------------------
    # Hosts webhook and MQTT actions may reach: names, addresses, CIDRs; empty = public addresses only.
    alert_allowed_hosts: str = Field("", validation_alias="RTVI_ALERT_ALLOWED_HOSTS")
    # The VLM that verifies a candidate when a rule has `verify`: any OpenAI-compatible base URL (vLLM,
    # NIM, OpenAI, a running rtvi VLM service's /v1). Empty: a rule with `verify` is refused.
    alert_vlm_url: str = Field("", validation_alias="RTVI_ALERT_VLM_URL")
    alert_vlm_model: str = Field("", validation_alias="RTVI_ALERT_VLM_MODEL")
    alert_vlm_api_key: str = Field("", validation_alias="RTVI_ALERT_VLM_API_KEY", repr=False)
    alert_vlm_timeout_s: float = Field(60, validation_alias="RTVI_ALERT_VLM_TIMEOUT_SEC", gt=0)
    # The MQTT broker of `mqtt` actions without their own url: mqtt://[user:password@]host[:port].
    alert_mqtt_url: str = Field("", validation_alias="RTVI_ALERT_MQTT_URL", repr=False)
    alert_webhook_retries: int = Field(5, validation_alias="RTVI_ALERT_WEBHOOK_RETRIES", ge=0, le=20)
    alert_webhook_timeout_s: float = Field(5, validation_alias="RTVI_ALERT_WEBHOOK_TIMEOUT_SEC", gt=0)
    # Incidents kept (the oldest go first, with their thumbnails).
    alert_max_incidents: int = Field(100_000, validation_alias="RTVI_ALERT_MAX_INCIDENTS", ge=1)
    # How often rules are re-read (a rule changed on another replica applies here within this).
    alert_rules_refresh_s: float = Field(2, validation_alias="RTVI_ALERT_RULES_REFRESH_SEC", gt=0)
    # Calibration (docs/alerts.md): the recent scores per stream and rule that the threshold is drawn
    # from, and how many a stream must have seen before a rule can fire on it.
    alert_calibration_window: int = Field(360, validation_alias="RTVI_ALERT_CALIBRATION_WINDOW", ge=8)
    alert_warmup_chunks: int = Field(12, validation_alias="RTVI_ALERT_WARMUP_CHUNKS", ge=2)
    # How often the calibration is saved to the registry (a restart or a replica taking over a camera goes
    # on from it, with no new warm-up); 0: never.
    alert_calibration_save_s: float = Field(30, validation_alias="RTVI_ALERT_CALIBRATION_SAVE_SEC", ge=0)
    # The service's address as receivers reach it (https://rtvi.example:8000): incidents' thumbnail_url is
    # absolute with it, a path without it.
    alert_public_url: str = Field("", validation_alias="RTVI_PUBLIC_URL")

    # --- assets ---------------------------------------------------------------------------------
    asset_storage_dir: Path = Field(Path("/tmp/assets"), validation_alias="ASSET_STORAGE_DIR")
    max_asset_storage_size_gb: float | None = Field(8, validation_alias="MAX_ASSET_STORAGE_SIZE_GB")
    asset_max_age_hours: float = Field(0, validation_alias="ASSET_MAX_AGE_HOURS", ge=0)
    # Where asset blobs live: empty = <storage>/files; s3://bucket/prefix = S3 (shared by replicas), read
    # through a local cache of at most RTVI_ASSET_CACHE_GB under <storage>/cache.
    asset_store: str = Field("", validation_alias="RTVI_ASSET_STORE")
    asset_cache_gb: float = Field(10, validation_alias="RTVI_ASSET_CACHE_GB", gt=0)
    # Objects without a registry row (a crash between upload and row) are removed at start-up once this
    # old: younger ones may be another replica's upload in flight.
    asset_orphan_grace_s: float = Field(3600, validation_alias="RTVI_ASSET_ORPHAN_GRACE_SEC", ge=0)
    # How often assets past ASSET_MAX_AGE_HOURS are looked for (the reference's timer: 300 s).
    asset_eviction_interval_s: float = Field(300, validation_alias="RTVI_ASSET_EVICTION_INTERVAL_SEC", gt=0)
    asset_download_max_file_size_gb: float = Field(
        8, validation_alias="ASSET_DOWNLOAD_MAX_FILE_SIZE_GB", gt=0
    )
    # Remote ingestion (spec §2.3): `url` in generate requests and /v1/files.
    asset_download_total_timeout_s: float = Field(300, validation_alias="ASSET_DOWNLOAD_TOTAL_TIMEOUT", gt=0)
    asset_download_connect_timeout_s: float = Field(
        10, validation_alias="ASSET_DOWNLOAD_CONNECT_TIMEOUT", gt=0
    )
    # Redirects followed (each hop SSRF-checked); clamped to 0-10 as the reference does.
    asset_download_max_redirects: int = Field(0, validation_alias="ASSET_DOWNLOAD_MAX_REDIRECTS")
    # Comma-separated host names that may resolve to private (RFC 1918, CGNAT, ULA) addresses.
    asset_download_allowed_private_hosts: str = Field(
        "", validation_alias="ASSET_DOWNLOAD_ALLOWED_PRIVATE_HOSTS"
    )
    asset_download_ssl_skip_verify_domains: str = Field(
        "", validation_alias="ASSET_DOWNLOAD_SSL_SKIP_VERIFY_DOMAINS"
    )
    # "domain=Bearer x;domain2=Basic y": an Authorization header per host (HTTPS only).
    asset_download_auth_tokens: str = Field("", validation_alias="ASSET_DOWNLOAD_AUTH_TOKENS", repr=False)
    s3_endpoint_url: str = Field("", validation_alias=AliasChoices("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"))
    # Largest multipart upload we accept (the reference is bounded only by its tmpfs, 8 GB).
    max_upload_size_gb: float = Field(8, validation_alias="RTVI_MAX_UPLOAD_SIZE_GB", gt=0)
    # Largest request body other than a multipart upload (JSON with data: URIs included); beyond it 413.
    # Larger media goes through /v1/files (streamed to disk) or a `url`.
    max_request_body_mb: float = Field(64, validation_alias="RTVI_MAX_REQUEST_BODY_MB", gt=0)
    # Comma-separated directories that `filename` registrations and file:// URLs may point into (realpath).
    # Empty = registering server paths is disabled (403), as the reference does for file:// URLs.
    file_url_allowed_dirs: str = Field("", validation_alias="FILE_URL_ALLOWED_DIRS")
    # Fernet key that seals camera credentials in the registry; empty = <storage>/secret.key (made 0600).
    secret_key: str = Field("", validation_alias="RTVI_SECRET_KEY", repr=False)
    # The registry's database: empty = SQLite in the storage dir; postgresql://user:pass@host/db = a
    # PostgreSQL that replicas share (set RTVI_SECRET_KEY too, the same on every replica).
    database_url: str = Field("", validation_alias="RTVI_DATABASE_URL", repr=False)
    skip_media_verification: bool = Field(False, validation_alias="VSS_SKIP_INPUT_MEDIA_VERIFICATION")

    # --- scale-out (docs/scale-out.md) ------------------------------------------------------------
    # Kafka brokers that share live streams among the replicas of a service; empty = this process runs
    # every auto-started stream itself.
    cluster_bootstrap: str = Field("", validation_alias="RTVI_CLUSTER_BOOTSTRAP")
    # Empty = rtvi-<service>-streams; one per service (its replicas' heartbeats go to <topic>-members).
    cluster_topic: str = Field("", validation_alias="RTVI_CLUSTER_TOPIC")
    # Partitions of a new stream topic (they spread its records; any number of replicas can share).
    cluster_partitions: int = Field(12, validation_alias="RTVI_CLUSTER_PARTITIONS", ge=1)
    # How long a silent replica keeps its cameras before the others take them (most of the failover time).
    cluster_session_timeout_ms: int = Field(
        10_000, validation_alias="RTVI_CLUSTER_SESSION_TIMEOUT_MS", ge=1000
    )
    # Names this process in the results' rtvi-replica header, the logs and the cluster's members (unique
    # per process); empty = <hostname>-<pid>.
    replica_id: str = Field("", validation_alias="RTVI_REPLICA_ID")

    # --- live streams (RTSP) --------------------------------------------------------------------
    rtsp_timeout_ms: int = Field(2000, validation_alias="RTVI_RTSP_TIMEOUT", ge=100)
    rtsp_reconnection_interval_s: float = Field(5, validation_alias="RTVI_RTSP_RECONNECTION_INTERVAL", ge=0)
    rtsp_reconnection_window_s: float = Field(60, validation_alias="RTVI_RTSP_RECONNECTION_WINDOW", ge=0)
    rtsp_reconnection_max_attempts: int = Field(
        10, validation_alias="RTVI_RTSP_RECONNECTION_MAX_ATTEMPTS", ge=0
    )
    stream_delete_drain_timeout_s: float = Field(
        30, validation_alias="RTVI_STREAM_DELETE_DRAIN_TIMEOUT_SEC", ge=0
    )
    stream_delete_blocking_timeout_s: float = Field(
        300, validation_alias="RTVI_STREAM_DELETE_BLOCKING_TIMEOUT_SEC", ge=0
    )

    # --- message bus (spec §6, §8) ---------------------------------------------------------------
    # Per-chunk results as nv.VisionLLM protobuf: MESSAGE_BUS=kafka (or the legacy KAFKA_ENABLED=true)
    # sends them to Kafka; "redis" appends them to a Redis Stream; empty (the runtime default) = off.
    message_bus: Literal["kafka", "redis", ""] = Field("", validation_alias="MESSAGE_BUS")
    # Unset: the service's reference default (rt-vlm true as seed 002 says, rt-embed false).
    kafka_enabled: bool | None = Field(None, validation_alias="KAFKA_ENABLED")
    # Empty = the service's default topic (mdx-embed / mdx-vlm-captions); KAFKA_TOPIC is the legacy name.
    message_bus_topic: str = Field("", validation_alias=AliasChoices("MESSAGE_BUS_TOPIC", "KAFKA_TOPIC"))
    # Empty disables Kafka output with a warning (spec §6.1).
    kafka_bootstrap_servers: str = Field("kafka:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    # Messages waiting for the broker (librdkafka's queue.buffering.max.messages); beyond it they are
    # dropped, counted in rtvi_bus_messages_dropped_total and logged.
    kafka_queue_maxsize: int = Field(1024, validation_alias="KAFKA_ASYNC_SEND_QUEUE_MAXSIZE", ge=1)
    # How long a queued message may wait for the broker before it counts as failed. The reference keeps
    # librdkafka's default; 5 min lets a broker restart or short outage pass without loss.
    kafka_message_timeout_ms: int = Field(300_000, validation_alias="KAFKA_MESSAGE_TIMEOUT_MS", ge=1000)
    # Exactly-once per partition across retries. A broker that forgets producer ids on restart (tansu with
    # memory storage) would stall an idempotent producer; the sink detects that and rebuilds it.
    kafka_enable_idempotence: bool = Field(True, validation_alias="KAFKA_ENABLE_IDEMPOTENCE")
    enable_kafka_messages_for_text_input: bool = Field(
        False, validation_alias="ENABLE_KAFKA_MESSAGES_FOR_TEXT_INPUT"
    )
    # Errors as JSON: "kafka" | "redis" | empty = follow MESSAGE_BUS=kafka. ENABLE_REDIS_ERROR_MESSAGES=true
    # (legacy) means redis.
    error_bus: Literal["kafka", "redis", ""] = Field("", validation_alias="ERROR_BUS")
    # Empty = mdx-embed-errors / mdx-vlm-errors: the reference code's defaults (its compose file says
    # vision-embed-errors; set ERROR_MESSAGE_TOPIC to match such a deployment).
    error_message_topic: str = Field("", validation_alias="ERROR_MESSAGE_TOPIC")
    enable_redis_error_messages: bool = Field(False, validation_alias="ENABLE_REDIS_ERROR_MESSAGES")
    # Hardware video decoding of files (NVDEC): auto = when torch sees a CUDA device; falls back to software.
    hwaccel: Literal["auto", "cuda", "none"] = Field("auto", validation_alias="RTVI_HWACCEL")
    # AV1 files decode in software even when the rest use NVDEC (the reference's switch of the same name).
    force_sw_av1_decoder: bool = Field(False, validation_alias="FORCE_SW_AV1_DECODER")
    # Traces over OTLP (core/telemetry/tracing.py): true / false; unset = on when an
    # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set. The exporter itself reads the standard OTEL_* variables.
    enable_otel_monitoring: bool | None = Field(None, validation_alias="ENABLE_OTEL_MONITORING")
    redis_host: str = Field("localhost", validation_alias="REDIS_HOST")
    redis_port: int = Field(6379, validation_alias="REDIS_PORT", ge=1, le=65535)
    redis_db: int = Field(0, validation_alias="REDIS_DB", ge=0)
    redis_password: str = Field("", validation_alias="REDIS_PASSWORD")
    redis_payload_key: str = Field("metadata", validation_alias="REDIS_PAYLOAD_KEY")
    redis_stream_maxlen: int = Field(10000, validation_alias="REDIS_STREAM_MAXLEN", ge=1)
    redis_queue_maxsize: int = Field(1024, validation_alias="REDIS_ASYNC_PUBLISH_QUEUE_MAXSIZE", ge=1)
    # Comma-separated camera hosts: names (exact) and addresses or networks (CIDR). Empty = any host.
    # A camera URL may point anywhere the service can reach; this keeps registrations to the cameras'.
    rtsp_allowed_hosts_list: str = Field("", validation_alias="RTVI_RTSP_ALLOWED_HOSTS")
    # TCP interleaving survives NAT and packet loss; UDP is lower latency on a clean LAN.
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", validation_alias="RTVI_RTSP_TRANSPORT")
    # Connecting (and the probe of /v1/streams/add) gives up after this long; reads use RTVI_RTSP_TIMEOUT.
    rtsp_open_timeout_s: float = Field(10, validation_alias="RTVI_RTSP_OPEN_TIMEOUT_SEC", gt=0)
    # Bounded queues of a live job: sampled chunks waiting for the model, and results per SSE reader.
    # When full, the oldest entry is dropped, counted (live_dropped_total) and logged.
    live_pending_chunks: int = Field(4, validation_alias="RTVI_LIVE_PENDING_CHUNKS", ge=1)
    live_subscriber_queue: int = Field(32, validation_alias="RTVI_LIVE_SUBSCRIBER_QUEUE", ge=1)
    # Which frame a live chunk takes for each of its n parts: the keyframe nearest the part's centre
    # (only that frame is decoded; exact when the part has no keyframe), or the frame nearest the centre
    # (its GOP decoded up to it). See core/media/windows.py.
    live_frame_pick: Literal["keyframe", "exact"] = Field("keyframe", validation_alias="RTVI_LIVE_FRAME_PICK")

    @field_validator("skip_media_verification", mode="before")
    @classmethod
    def _non_empty_means_skip(cls, v: object) -> bool:
        # Reference semantics: verification is skipped when the variable holds any non-empty value.
        if isinstance(v, bool):
            return v
        return bool(str(v).strip()) and str(v).strip().lower() not in {"0", "false", "no"}

    @field_validator("index_retention_by_stream")
    @classmethod
    def _hours_not_negative(cls, v: dict[str, float]) -> dict[str, float]:
        if bad := [stream for stream, hours in v.items() if hours < 0]:
            raise ValueError(f"hours must be 0 (keep) or more, not for {bad[:3]}")
        return v

    @field_validator("message_bus", "error_bus", mode="before")
    @classmethod
    def _bus_name(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("rtsp_allowed_hosts_list", "alert_allowed_hosts")
    @classmethod
    def _hosts_parse(cls, v: str) -> str:
        HostAllowlist.parse(v)  # a typo is a start-up error, not an open door
        return v

    @field_validator("asset_download_max_redirects", mode="after")
    @classmethod
    def _clamp_redirects(cls, v: int) -> int:
        return min(max(v, 0), 10)

    # --- the groups: each component gets its own ---------------------------------------------------
    @property
    def storage(self) -> StorageSettings:
        return _group(StorageSettings, self)

    @property
    def ingest(self) -> IngestSettings:
        return _group(IngestSettings, self)

    @property
    def live(self) -> LiveSettings:
        return _group(LiveSettings, self)

    @property
    def bus(self) -> BusSettings:
        return _group(BusSettings, self)

    @property
    def index(self) -> IndexSettings:
        return _group(IndexSettings, self)

    @property
    def cluster(self) -> ClusterSettings:
        return _group(ClusterSettings, self)

    @property
    def vlm(self) -> VlmSettings:
        return _group(VlmSettings, self)

    @property
    def model(self) -> ModelSettings:
        return _group(ModelSettings, self)

    @property
    def alerts(self) -> AlertSettings:
        return _group(AlertSettings, self)

    # The model group's derived values, on the whole object too: the reference-configuration tests (and
    # any caller holding a Settings) read them here. One definition, in ModelSettings.
    @property
    def uses_bundled_model(self) -> bool:
        return self.model.uses_bundled_model

    @property
    def endpoint_api_key(self) -> str:
        return self.model.endpoint_api_key


_G = TypeVar("_G", bound="DataclassInstance")


def _group(cls: type[_G], settings: Settings) -> _G:
    """A group from the flat fields of the same names."""
    return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


class _Replica(Protocol):
    @property
    def replica_id(self) -> str: ...


def replica_name(settings: _Replica) -> str:
    """RTVI_REPLICA_ID, else <hostname>-<pid> (from Settings or a group that holds replica_id)."""
    return settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"


def service_source_name(service: str) -> str:
    """The `source` reported in error messages: the pod hostname, else the service name (spec §6.5)."""
    return os.environ.get("HOSTNAME") or f"rtvi-{service}"
