"""HTTP GETs with a timeout per try, retries with exponential back-off for transient failures,
and a decode step whose failure (a truncated body) counts as transient: the public-HPA download
and the weight caches fetch through :func:`fetch`. ``file://`` URLs work too (offline mirrors)."""

from __future__ import annotations

import http.client
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hpasc.core.errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors worth another try: the server or the connection may recover.
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class HttpPolicy:
    """How patiently to fetch: per-request timeout (s), retries after the first try, back-off (s)."""

    timeout: float = 60.0
    retries: int = 3
    backoff: float = 2.0


class FetchError(Exception):
    """A file could not be fetched or decoded, after any retries."""


class Interrupted(Exception):
    """The run is stopping (^C): no further tries."""


def fetch(url: str, policy: HttpPolicy, decode: Callable[[bytes], T], stop: threading.Event | None = None) -> T:
    """GET ``url`` and ``decode`` its body, with a timeout per try.

    Transient failures (HTTP 5xx/429, time-outs, dropped connections, a body that does not decode,
    e.g. a truncated transfer) are retried with exponential back-off; a 404 or a malformed URL is
    final at once. Once ``stop`` is set, no try starts and a back-off ends with :class:`Interrupted`.
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
            with urllib.request.urlopen(request, timeout=policy.timeout) as response:
                return decode(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code not in _TRANSIENT_HTTP:
                raise FetchError(f"HTTP {exc.code} for {url}") from None
            reason = f"HTTP {exc.code}"
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
