"""The one typed settings object, read from ``CALLPULSE_*`` environment variables."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.pipeline.voice.names import BackendName


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
    # What a recording may cost once decoded (channels x seconds x 16 kHz x 2 bytes), checked when
    # the upload is probed (413 over it) and again while the worker decodes, which stops at it: a
    # small compressed file of many silent channels must not become tens of GB of PCM. 2 GiB holds
    # a 6-hour stereo call (1.38 GB).
    max_decoded_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)
    # Address-space limit of each ffmpeg decoder process: a file that drives the decoder itself
    # into allocating fails the recording with a reason instead of taking the worker's memory.
    decode_memory_limit_bytes: int = Field(default=1024**3, ge=64 * 1024 * 1024)
    # Parsing that costs CPU in a request (rule YAML/JSON, transcripts) runs in child processes,
    # at most this many at once per API process; a request waits this long for one (then 503) and
    # may use this many seconds of CPU parsing (then 422).
    parse_workers: int = Field(default=2, ge=1, le=64)
    parse_timeout_s: float = Field(default=30.0, gt=0)

    # Segmentation (silero-vad over 16 kHz audio).
    sample_rate: int = 16_000
    vad_threshold: float = 0.5
    min_segment_s: float = 1.5
    max_segment_s: float = 10.0
    # Speech regions closer than this are merged into one segment (same speaker).
    merge_gap_s: float = 0.6

    # Inference.
    model_backend: BackendName = "embedded"
    model_path: Path | None = None
    device: str = "cpu"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    infer_batch_size: int = 16
    # Dynamic batching on the infer queue (GPU workers): a task tops its own segments up with other
    # recordings' waiting segments to this many (0: off, each task runs its own batch), waiting up to
    # infer_max_wait_ms for them to arrive. Results go back to each recording as usual.
    infer_max_batch: int = Field(default=0, ge=0, le=4096)
    infer_max_wait_ms: int = Field(default=0, ge=0, le=10_000)
    # CPU inference scales with worker processes; a second intra-op thread per process measured
    # slower for one segment and no faster for batches of 16 on small models (docs/MODELS.md).
    torch_threads: int = 1
    # Generative backends (omni): the most tokens of <think>…</think><answer>…</answer> per segment.
    # 128 holds a few sentences of reasoning plus the answer; a cut-off answer is still parsed.
    omni_max_new_tokens: int = 128

    # --- Multimodal evidence and fusion ---
    # A prediction whose fused, calibrated confidence is below this is flagged `uncertain` (API,
    # webhooks, dashboard); it is never hidden.
    uncertain_below: float = Field(default=0.5, ge=0.0, le=1.0)
    # Words of an uploaded transcript feed the text model (bundled MiniLM + a MELD-trained head).
    text_model_enabled: bool = True
    # Video recordings: frames sampled inside each analyzed segment for the face-expression model.
    face_model_enabled: bool = True
    frames_per_segment: int = Field(default=3, ge=1, le=16)
    # Per-speaker normalisation: the audio model summarises up to this many of the speaker's
    # segments, spread over the call, as that speaker's reference. Off: the voice model's head for
    # raw features decides. A caller who holds one emotion through the whole call makes a reference
    # that carries it, and normalising against it hides it (docs/MODELS.md, independent evaluation).
    speaker_normalisation: bool = True
    speaker_reference_segments: int = Field(default=12, ge=1, le=64)

    # --- Our own speech recognition (worker/pipeline/speech/whisper_ct2.py, asr.py) ---
    # Calls uploaded without a transcript get one before emotion inference, on the `asr` queue
    # (docs/TRANSCRIPTS.md): by default from the bundled multilingual Whisper-base through
    # faster-whisper (CTranslate2: int8 on CPU, float16 on CUDA). asr_model_path: any other
    # faster-whisper directory (model.bin), or a transformers Whisper checkpoint for GPU workers.
    asr_enabled: bool = True
    # "sensevoice": SenseVoice-Small's CTC words (worker/pipeline/speech/sensevoice_asr.py) from the
    # release directory in asr_model_path (or model_path when the emotion backend is sensevoice).
    asr_engine: Literal["whisper", "sensevoice"] = "whisper"
    asr_model_path: Path | None = None
    # Language code for every call ("en"); a recording's own `language` wins; None: detected per channel.
    asr_language: str | None = None
    # 30 s windows decoded at once (the transformers engine halves it when the GPU runs out of memory).
    asr_batch_size: int = Field(default=4, ge=1, le=256)
    # faster-whisper: CPU threads per model (each worker process has its own) and the CTranslate2
    # compute type ("auto": int8 on CPU, float16 on CUDA).
    asr_threads: int = Field(default=2, ge=0, le=64)
    asr_compute_type: str = "auto"

    # Operations: a recording that has not moved for this long is re-enqueued by the sweep;
    # after max_attempts re-enqueues it is failed with a reason instead of looping forever.
    # A backstop only: work a worker holds has a lease, and a lease that stops being renewed (its
    # worker died) is re-driven by the next sweep, long before this (docs/DESIGN.md, "Recovery").
    stuck_after_s: float = 600.0
    sweep_interval_s: float = Field(default=30.0, gt=0)
    # Leases on running work: renewed every lease_heartbeat_s while a task runs; one not renewed for
    # lease_ttl_s belongs to a dead worker. The TTL covers a few missed heartbeats (a busy database).
    lease_ttl_s: float = Field(default=60.0, gt=0)
    lease_heartbeat_s: float = Field(default=15.0, gt=0)
    # The media sweep (every media_sweep_interval_s) removes recording folders without a row
    # (an API killed mid-upload) and decoded caches of final calls (a late duplicate infer task),
    # once nothing in them has changed for media_grace_s.
    media_sweep_interval_s: float = Field(default=600.0, gt=0)
    media_grace_s: float = Field(default=3600.0, gt=0)
    # Messages the broker could not take wait in the outbox; each sweep sends at most this many.
    outbox_batch: int = Field(default=500, ge=1)
    max_attempts: int = 5
    # Time limits per queue (seconds; worker/jobs/names.py): past it a task is stopped and records
    # a failure with the reason (a recording fails; ASR continues without words; rules and notify
    # leave it to their next pass); 30 s later the pool kills it, so a stuck task never holds a
    # worker. Long for inference and ASR of long calls, short for webhook deliveries.
    ingest_time_limit_s: float = Field(default=1800.0, gt=0)
    asr_time_limit_s: float = Field(default=3600.0, gt=0)
    infer_time_limit_s: float = Field(default=3600.0, gt=0)
    rules_time_limit_s: float = Field(default=600.0, gt=0)
    notify_time_limit_s: float = Field(default=300.0, gt=0)
    # Retention (per tenant: `callpulse tenants update --media-retention-days/--data-retention-days`):
    # how often beat deletes what expired, and at most how many recordings per tenant and kind a
    # pass deletes (a first pass over years of calls spreads over several).
    retention_interval_s: float = Field(default=3600.0, gt=0)
    retention_batch: int = Field(default=500, ge=1, le=100_000)
    # Prometheus: each `callpulse worker` serves /metrics on this port (0: not at all); the API
    # serves /metrics on its own port.
    worker_metrics_port: int = Field(default=9540, ge=0, le=65535)
    # Set it where the API's port is reachable from outside: /metrics (API and workers) then asks
    # for `Authorization: Bearer <token>` (Prometheus: `authorization: {credentials: …}`).
    metrics_token: str = ""

    # Tenant policy default for new tenants (AI Act Art. 5(1)(f): no emotion inference on employees).
    # Comma list or JSON list in the environment (NoDecode: the validator below splits it).
    default_analyzed_roles: Annotated[list[str], NoDecode] = ["customer"]

    # --- Rules and webhooks ---
    # The SSRF guard refuses loopback, private, link-local and other non-public webhook targets
    # (checked after DNS resolution, at creation and at every delivery); cloud metadata addresses
    # are refused even when this is on. Turn on only for tests or a trusted internal network.
    webhook_allow_private_targets: bool = False
    webhook_timeout_s: float = 10.0
    # Attempts per delivery before it is given up (the log keeps each one; redelivery starts anew).
    webhook_max_attempts: int = 8
    # Exponential backoff between attempts: base * 2**(attempt-1), capped; the cap stays well under
    # the broker's visibility timeout so a delayed retry is never redelivered early.
    webhook_backoff_base_s: float = 5.0
    webhook_backoff_cap_s: float = 900.0
    # A delivery that gave up during a long receiver outage is tried again once the receiver
    # answers: the delivery sweep sends one of the endpoint's failed deliveries as a probe every
    # webhook_probe_interval_s, and once the endpoint answers anything, each failed one gets another
    # attempt. Only deliveries created in the last webhook_resume_window_s (0: never resume).
    webhook_resume_window_s: float = Field(default=86400.0, ge=0)
    webhook_probe_interval_s: float = Field(default=120.0, gt=0)
    # A backtest evaluates at most this many recordings of its time range (newest first).
    backtest_max_recordings: int = 1000

    # --- Supervisor dashboard ---
    # Signs the dashboard's session cookie. Empty: a random secret is generated once and kept in
    # data_dir/session-secret (a warning is logged); set it explicitly when several hosts serve
    # the dashboard, and change it to log every supervisor out.
    session_secret: str = ""
    session_max_age_s: int = 8 * 3600
    # Send the cookie only over HTTPS; turn on behind a TLS-terminating proxy.
    session_cookie_secure: bool = False
    # How often the alerts feed (server-sent events) looks for new alerts of the tenant.
    dashboard_alert_poll_s: float = 1.0
    # Dashboard forms are accepted only from our own pages (docs/SECURITY.md): the request's Host,
    # plus these origins ("https://callpulse.example.com"), for a proxy that rewrites Host.
    dashboard_origins: Annotated[list[str], NoDecode] = []

    # --- Network and abuse limits (docs/SECURITY.md) ---
    # Reverse proxies (addresses or CIDRs, comma list) whose X-Forwarded-For / X-Forwarded-Host
    # are believed; from anyone else those headers are ignored. Empty: nobody's.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Rate limits (counted in Redis: rate_limit_url, default the broker). 0 turns one off. Over a
    # limit the API answers 429 with Retry-After. Failed authentications (API or dashboard login)
    # per client address in auth_failure_window_s; past the limit even a valid key waits.
    auth_failures_per_ip: int = Field(default=20, ge=0)
    auth_failure_window_s: float = Field(default=300.0, gt=0)
    # Dashboard login attempts per client address (any outcome) in auth_failure_window_s.
    login_attempts_per_ip: int = Field(default=30, ge=0)
    # Requests per API key per minute.
    api_requests_per_key_per_minute: int = Field(default=1200, ge=0)
    # Webhook redelivery: per tenant per minute, and at most one per delivery in this interval.
    webhook_redeliveries_per_minute: int = Field(default=30, ge=0)
    webhook_redeliver_interval_s: float = Field(default=30.0, gt=0)
    rate_limit_url: str = ""
    # Request line plus headers, in bytes: more is refused with 431 before it is parsed
    # (`callpulse api`), so one request cannot keep the server parsing megabytes of headers.
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)

    @field_validator("dashboard_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        from ipaddress import ip_network

        for entry in value:
            ip_network(entry, strict=False)  # ValueError names the bad entry at startup
        return value

    # --- Live calls over WebSockets (/v1/live, /v1/live/twilio) ---
    # Streams one tenant may have open at once; the next one is refused (close code 4429).
    live_max_streams_per_tenant: int = Field(default=20, ge=1)
    # Longest call a stream may carry (seconds of audio); past it the stream ends (close code 4413).
    live_max_duration_s: float = Field(default=4 * 3600.0, gt=0)
    # After the stop message, how long the socket waits for the last segments' analysis before
    # sending `stopped` anyway (the recording still finishes; GET /v1/recordings/{id} shows it).
    live_stop_wait_s: float = Field(default=120.0, ge=0)
    # How often a stream looks for newly analyzed segments and alerts to push to its client.
    live_poll_s: float = Field(default=0.2, gt=0)
    # Words on live segments (with asr_enabled): the infer worker transcribes each analyzed segment of
    # a live call before its inference (worker/stages/live_words.py), so the text model, `words`
    # rules and the `segment` event have them. Off by default: on a CPU, Whisper costs about 2.7 CPU
    # seconds per customer turn (docs/BENCHMARKS.md), which live latency cannot afford there.
    live_asr_enabled: bool = False

    @field_validator("default_analyzed_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip().lower() for part in text.split(",") if part.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'callpulse.db'}"

    @property
    def resolved_rate_limit_url(self) -> str:
        return self.rate_limit_url or self.broker_url

    @property
    def resolved_media_dir(self) -> Path:
        return self.media_dir if self.media_dir is not None else self.data_dir / "media"


@lru_cache
def get_settings() -> Settings:
    return Settings()
