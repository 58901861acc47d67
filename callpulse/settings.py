"""The one typed settings object, read from ``CALLPULSE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "callpulse"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLPULSE_", env_file=".env", extra="ignore")

    # Where the embedded (no-server) mode keeps its SQLite file and media by default.
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""
    broker_url: str = "redis://127.0.0.1:6379/0"
    media_dir: Path | None = None

    # Ingestion limits.
    max_upload_bytes: int = 512 * 1024 * 1024
    min_duration_s: float = 0.5
    max_duration_s: float = 6 * 3600.0

    # Segmentation (silero-vad over 16 kHz audio).
    sample_rate: int = 16_000
    vad_threshold: float = 0.5
    min_segment_s: float = 1.5
    max_segment_s: float = 10.0
    # Speech regions closer than this are merged into one segment (same speaker).
    merge_gap_s: float = 0.6

    # Inference.
    model_backend: Literal["embedded", "audio-classifier", "omni", "r1-omni"] = "embedded"
    model_path: Path | None = None
    device: str = "cpu"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    infer_batch_size: int = 16

    # Operations: a recording that has not moved for this long is re-enqueued by the sweep;
    # after max_attempts re-enqueues it is failed with a reason instead of looping forever.
    stuck_after_s: float = 600.0
    sweep_interval_s: float = 120.0
    max_attempts: int = 5

    # Tenant policy default for new tenants (AI Act Art. 5(1)(f): no emotion inference on employees).
    default_analyzed_roles: list[str] = ["customer"]

    @field_validator("default_analyzed_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'callpulse.db'}"

    @property
    def resolved_media_dir(self) -> Path:
        return self.media_dir if self.media_dir is not None else self.data_dir / "media"


@lru_cache
def get_settings() -> Settings:
    return Settings()
