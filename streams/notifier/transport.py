"""Sending one JSON body: a small protocol and its httpx implementation.

The notifier depends on :class:`Transport`, so its retry and rate logic can be
driven by any sender; tests use the real httpx transport against a local server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import httpx

from driftline.streams.normalize import printable

# Bounds memory only. The notifier scrubs secrets from a response before it cuts it to the
# length it logs and stores (MAX_ERROR_CHARS, far shorter): cutting first can split an echoed
# secret so that scrubbing no longer finds it.
MAX_RESPONSE_CHARS = 64_000


class TransportError(ConnectionError):
    """No HTTP response: connection refused or reset, DNS failure, or timeout."""


@dataclass(frozen=True, slots=True)
class TransportResponse:
    status_code: int
    text: str
    retry_after_s: float | None = None


class Transport(Protocol):
    async def post(self, url: str, body: bytes, timeout_s: float) -> TransportResponse: ...

    async def aclose(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: rare for these APIs, fall back to our own backoff
        return None


class HttpxTransport:
    """POSTs JSON with one pooled :class:`httpx.AsyncClient` per event loop.

    One client per loop because ``driftline replay --notify`` runs the notifier
    under ``asyncio.run`` while the stream worker keeps one long-lived loop.
    """

    def __init__(self, *, user_agent: str = "driftline-notifier") -> None:
        self._user_agent = user_agent
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                headers={"User-Agent": self._user_agent}, follow_redirects=False
            )
            self._loop = loop
        return self._client

    async def post(self, url: str, body: bytes, timeout_s: float) -> TransportResponse:
        client = self._client_for_loop()
        try:
            response = await client.post(
                url,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=timeout_s,
            )
        except httpx.TimeoutException as exc:
            name = type(exc).__name__
            raise TransportError(f"timed out after {timeout_s:g} s ({name})") from None
        except httpx.HTTPError as exc:
            # The message of some httpx errors includes the URL; the caller scrubs secrets.
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        return TransportResponse(
            status_code=response.status_code,
            # The peer's words, printed by doctor and replay and stored with the delivery:
            # without control characters (an escape sequence would reach a terminal).
            text=printable(response.text[:MAX_RESPONSE_CHARS]),
            retry_after_s=_retry_after(response.headers.get("Retry-After")),
        )

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.aclose()
        self._client = None
        self._loop = None
