"""Every environment variable the services read, typed, with the reference's defaults (spec §8).

One place: modules receive a `Settings` object instead of reading os.environ themselves.
Where our default differs from the reference, the field's comment says why.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Service = Literal["embed", "vlm"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore")

    # --- core -----------------------------------------------------------------------------------
    backend_host: str = Field("127.0.0.1", validation_alias="BACKEND_HOST")
    backend_port: int = Field(8000, validation_alias="BACKEND_PORT", ge=1, le=65535)
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    # Bearer token; when set every /v1 route except health/info requires it (the reference declares
    # but never enforces auth).
    api_key: str = Field("", validation_alias="RTVI_API_KEY")

    # --- model ----------------------------------------------------------------------------------
    # Empty = the bundled offline model (the reference defaults to git:https://huggingface.co/nvidia/
    # Cosmos-Embed1-448p, which cannot be fetched on an offline machine).
    model_path: str = Field("", validation_alias="MODEL_PATH")
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
    hf_token: str = Field("", validation_alias="HF_TOKEN")
    ngc_api_key: str = Field("", validation_alias=AliasChoices("NGC_API_KEY", "NVIDIA_API_KEY"))
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "rtvi" / "models",
        validation_alias=AliasChoices("NGC_MODEL_CACHE", "MODEL_ROOT_DIR"),
    )
    trust_remote_code: bool = Field(True, validation_alias="RTVI_TRUST_REMOTE_CODE")
    device: str = Field("auto", validation_alias="RTVI_DEVICE")  # auto | cpu | cuda | cuda:N

    # --- assets ---------------------------------------------------------------------------------
    asset_storage_dir: Path = Field(Path("/tmp/assets"), validation_alias="ASSET_STORAGE_DIR")
    max_asset_storage_size_gb: float | None = Field(8, validation_alias="MAX_ASSET_STORAGE_SIZE_GB")
    asset_max_age_hours: float = Field(0, validation_alias="ASSET_MAX_AGE_HOURS", ge=0)
    asset_download_max_file_size_gb: float = Field(
        8, validation_alias="ASSET_DOWNLOAD_MAX_FILE_SIZE_GB", gt=0
    )
    # Largest multipart upload we accept (the reference is bounded only by its tmpfs, 8 GB).
    max_upload_size_gb: float = Field(8, validation_alias="RTVI_MAX_UPLOAD_SIZE_GB", gt=0)
    # Comma-separated directories that `filename` registrations and file:// URLs may point into (realpath).
    # Empty = registering server paths is disabled (403), as the reference does for file:// URLs.
    file_url_allowed_dirs: str = Field("", validation_alias="FILE_URL_ALLOWED_DIRS")
    skip_media_verification: bool = Field(False, validation_alias="VSS_SKIP_INPUT_MEDIA_VERIFICATION")

    # --- live streams (RTSP) --------------------------------------------------------------------
    rtsp_timeout_ms: int = Field(2000, validation_alias="RTVI_RTSP_TIMEOUT", ge=100)
    rtsp_latency_ms: int = Field(2000, validation_alias="RTVI_RTSP_LATENCY", ge=0)
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
    max_live_streams: int = Field(256, validation_alias="RTVI_MAX_LIVE_STREAMS", ge=1)

    @field_validator("skip_media_verification", mode="before")
    @classmethod
    def _non_empty_means_skip(cls, v: object) -> bool:
        # Reference semantics: verification is skipped when the variable holds any non-empty value.
        if isinstance(v, bool):
            return v
        return bool(str(v).strip()) and str(v).strip().lower() not in {"0", "false", "no"}

    @field_validator("max_asset_storage_size_gb", mode="before")
    @classmethod
    def _empty_means_no_cap(cls, v: object) -> object:
        return None if v in ("", None) else v

    @field_validator("rtsp_timeout_ms", "rtsp_latency_ms", mode="before")
    @classmethod
    def _empty_means_default(cls, v: object) -> object:
        return 2000 if v in ("", None) else v

    @property
    def allowed_local_dirs(self) -> list[Path]:
        return [Path(os.path.realpath(d.strip())) for d in self.file_url_allowed_dirs.split(",") if d.strip()]

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def service_source_name(service: Service) -> str:
    """The `source` reported in error messages: the pod hostname, else the service name (spec §6.5)."""
    return os.environ.get("HOSTNAME") or f"rtvi-{service}"
