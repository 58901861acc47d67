"""`callpulse api`'s HTTP server: uvicorn, with a bound on the request line plus headers.

uvicorn's httptools parser has no such bound, and gathers a header value in pieces as it arrives:
a 20 MB header kept the server parsing for seconds. The protocol below counts the bytes of each
request until its headers are complete and answers 431 (then closes) once they pass
CALLPULSE_MAX_HEADER_BYTES, before parsing any further. The h11 parser (when httptools is not
installed) gets the same bound through its own setting. uvicorn's own X-Forwarded-For handling is
off: api.client_ip believes those headers only from CALLPULSE_TRUSTED_PROXIES."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from callpulse.settings import get_settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is part of uvicorn[standard]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


REFUSAL_LINGER_S = 0.5


def _refusal(limit: int) -> bytes:
    body = json.dumps({"detail": f"request headers larger than {limit} bytes "
                                 "(CALLPULSE_MAX_HEADER_BYTES)"}).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


if HttpToolsProtocol is not None:
    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """httptools with a byte budget for each request's line and headers."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_limit = get_settings().max_header_bytes
            self.header_bytes = 0
            self.reading_headers = True  # a new connection starts with a request's headers
            self.refused = False
            self.header_tail = b""  # the last bytes read, so a blank line split across reads is seen

        def on_headers_complete(self) -> None:
            self.reading_headers = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.reading_headers, self.header_bytes = True, 0  # the next request on this connection
            self.header_tail = b""

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return
            if self.reading_headers:
                # Only the bytes up to the blank line that ends the headers count: the same read
                # often carries the start of the body (any upload of more than one packet).
                seen = self.header_tail + data
                end = seen.find(b"\r\n\r\n")
                self.header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self.header_tail))
                self.header_tail = seen[-3:]
                if self.header_bytes > self.header_limit:
                    self.refused = True
                    transport: asyncio.Transport = self.transport
                    transport.write(_refusal(self.header_limit))
                    # Read nothing more, and close a moment later: closing with unread bytes at
                    # once resets the connection, and the client would never see the 431.
                    transport.pause_reading()
                    asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)
                    return
            super().data_received(data)


def serve(host: str, port: int, workers: int | None) -> None:
    import uvicorn

    limit = get_settings().max_header_bytes
    http: Any = BoundedHttpToolsProtocol if HttpToolsProtocol is not None else "h11"
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, http=http,
                h11_max_incomplete_event_size=limit, proxy_headers=False, log_level="info")
