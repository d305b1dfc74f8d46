"""HTTP GETs with a time limit per try, retries with exponential back-off for transient failures,
and a decode step whose failure (a truncated body) counts as transient: the public-HPA download
and the weight caches fetch through :func:`fetch`. ``file://`` URLs work too (offline mirrors).

Hostile servers are bounded: the body streams to a temporary file in chunks (never whole in
memory), a body longer than the policy's byte limit is refused from its header or as soon as it
passes the limit, the time limit holds for the whole try (connection, headers and the body read
however slowly it trickles), and a redirect is followed only to http(s).
"""

from __future__ import annotations

import http.client
import logging
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TypeVar
from urllib.parse import urlsplit

from hpasc.core.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors worth another try: the server or the connection may recover.
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HttpPolicy:
    """How patiently to fetch: the time limit of one try (s), retries after the first try,
    back-off (s), and the most bytes a body may have."""

    timeout: float = 60.0
    retries: int = 3
    backoff: float = 2.0
    max_bytes: int = 2 << 30


class FetchError(Exception):
    """A file could not be fetched or decoded, after any retries."""


class Interrupted(Exception):
    """The run is stopping (^C): no further tries."""


PROBE_S = 5.0
"""The longest a reachability probe waits for one connection."""


def check_reachable(url: str, timeout: float = PROBE_S) -> None:
    """One quick connection to ``url``'s host (http and https only): FetchError at once when it
    fails (offline, a wrong host), instead of a download's retries with back-off, ~15 s behind an
    empty progress bar."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=min(timeout, PROBE_S)).close()
    except OSError as exc:
        raise FetchError(f"cannot reach {parts.hostname}:{port} ({exc.strerror or exc}): offline, or a wrong "
                         "address?") from None


def fetch(url: str, policy: HttpPolicy, decode: Callable[[IO[bytes]], T], stop: threading.Event | None = None) -> T:
    """GET ``url`` and ``decode`` its body (a temporary file, open for reading from its start).

    Transient failures (HTTP 5xx/429, time-outs, dropped connections, a body that does not decode,
    e.g. a truncated transfer) are retried with exponential back-off; a 404, a malformed URL, a
    body over the byte limit or a redirect to another scheme is final at once. Once ``stop`` is
    set, no try starts and a back-off ends with :class:`Interrupted`.
    """
    stop = stop or threading.Event()
    try:
        request = urllib.request.Request(url)
    except ValueError as exc:  # urllib's word for a URL it cannot parse or has no handler for
        raise FetchError(f"bad URL {url!r} ({exc})") from None
    for attempt in range(policy.retries + 1):
        if stop.is_set():
            raise Interrupted(url)
        try:
            with tempfile.TemporaryFile() as body:
                _receive(request, policy, body)
                body.seek(0)
                return decode(body)
        except urllib.error.HTTPError as exc:
            if exc.code not in _TRANSIENT_HTTP:
                raise FetchError(f"HTTP {exc.code} for {url}") from None
            reason = f"HTTP {exc.code}"
        except _Refused as exc:
            raise FetchError(f"{url}: {exc}") from None
        except InputError as exc:
            reason = str(exc)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = _describe(exc)
        if attempt == policy.retries:
            raise FetchError(f"{reason} ({url}, {attempt + 1} tries)")
        delay = policy.backoff * 2**attempt
        log.debug("%s: %s, retrying in %.1f s", url, reason, delay)
        stop.wait(delay)
    raise AssertionError("unreachable: the last try returns or raises")


class _Refused(Exception):
    """A response no retry would change: a body over the byte limit, a redirect to another scheme."""


def _receive(request: urllib.request.Request, policy: HttpPolicy, body: IO[bytes]) -> None:
    """Copy the response to ``request`` into ``body`` within the policy's time and byte limits."""
    deadline = time.monotonic() + policy.timeout
    with _OPENER.open(request, timeout=policy.timeout) as response:
        declared = response.headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > policy.max_bytes:
            raise _Refused(f"a body of {int(declared)} bytes is over the limit of {policy.max_bytes}")
        connection = _socket_of(response)
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the body did not arrive within the time limit")
            if connection is not None:  # a silent server too is cut off at the deadline
                connection.settimeout(left)
            # read1: one receive, so a body that trickles in byte by byte meets the deadline too
            chunk = response.read1(_CHUNK) if hasattr(response, "read1") else response.read(_CHUNK)
            if not chunk:
                return
            size += len(chunk)
            if size > policy.max_bytes:
                raise _Refused(f"the body is over the limit of {policy.max_bytes} bytes")
            body.write(chunk)


def _socket_of(response: object) -> socket.socket | None:
    """The connection's socket under an HTTP response (None for file:// and other schemes).
    http.client keeps it only inside the response's buffered reader."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    connection = getattr(raw, "_sock", None)
    return connection if isinstance(connection, socket.socket) else None


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects to http(s) only: urllib's own handler follows ftp:// too."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise _Refused(f"a redirect to {scheme}:// is not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
