"""Messages of the live-call WebSocket protocol (/v1/live); docs/LIVE.md describes the exchange."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from api.schemas import UploadMetadata

# The largest binary message a client may send: 64 KiB is ~2 s of 16 kHz stereo PCM.
MAX_FRAME_BYTES = 64 * 1024


class LiveStart(UploadMetadata):
    """The first text message of a stream: the call's identity and the audio format that follows.
    Besides these fields it takes what an upload's metadata takes (``language``)."""

    event: Literal["start"]
    encoding: Literal["pcm_s16le", "mulaw"]
    sample_rate: Literal[8000, 16000]
    channels: Literal[1, 2] = Field(description="Interleaved channels in every binary message.")

    @model_validator(mode="after")
    def _roles_name_channels(self) -> LiveStart:
        extra = [key for key in self.channel_roles if int(key) >= self.channels]
        if extra:
            raise ValueError(f"channel_roles names channel {extra[0]}, but the stream has "
                             f"{self.channels} channel(s)")
        return self


# WebSocket close codes (4000-4999 are the application's; 4xxx mirrors the HTTP status it means).
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 1008  # the message sequence or a message's fields are wrong
CLOSE_BAD_DATA = 1003  # binary frames that are not audio of the declared format
CLOSE_TOO_BIG = 1009  # a binary message over MAX_FRAME_BYTES
CLOSE_INTERNAL = 1011
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403  # a read-only key
CLOSE_RATE_LIMITED = 4429  # too many failed authentications from the address, or requests with the key
CLOSE_TOO_LONG = 4413  # the call passed CALLPULSE_LIVE_MAX_DURATION_S
