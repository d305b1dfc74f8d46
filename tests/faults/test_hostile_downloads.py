"""Issue 29, items 12 and 13: the downloader against hostile servers on loopback. A body streams to
disk (memory stays flat for a large body and for a gzip bomb), a multi-page TIFF is refused from
its page count before any pixel is decoded, a body over the byte limit is refused from its header,
the time limit holds for the whole request (a trickled or stalled body), and only http(s)
redirects are followed."""

from __future__ import annotations

import gzip
import io
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tifffile

from hpasc.core.errors import InputError
from hpasc.core.http import FetchError, HttpPolicy, fetch
from hpasc.core.images import decode_channel

Answer = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], str]]:
    """serve(answer) → the URL of a loopback server whose every GET is ``answer(handler)``."""
    servers = []

    def start(answer: Answer) -> str:
        handler = type("Handler", (BaseHTTPRequestHandler,), {"do_GET": answer, "log_message": lambda *a: None})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/x_red.tif.gz"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _head(handler: BaseHTTPRequestHandler, length: int | None) -> None:
    handler.send_response(200)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def test_a_trickled_body_ends_at_the_time_limit(serve) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        _head(handler, 100)
        for _ in range(100):  # 1 byte every 0.3 s: each read is quick, the whole takes 30 s
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.3)

    began = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(serve(trickle), HttpPolicy(timeout=2, retries=0, backoff=0), lambda body: body.read())
    assert time.monotonic() - began < 3.5  # was 30 s: the limit held per read only


def test_a_stalled_body_ends_at_the_time_limit(serve) -> None:
    def stall(handler: BaseHTTPRequestHandler) -> None:
        _head(handler, 100)
        handler.wfile.write(b"x" * 10)
        handler.wfile.flush()
        time.sleep(1.5)  # under the limit per read, past it in all
        handler.wfile.write(b"x")
        time.sleep(1.5)

    began = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(serve(stall), HttpPolicy(timeout=2, retries=0, backoff=0), lambda body: body.read())
    assert time.monotonic() - began < 2.5


def test_a_body_over_the_limit_is_refused_from_its_header_without_a_retry(serve) -> None:
    tries = []

    def huge(handler: BaseHTTPRequestHandler) -> None:
        tries.append(1)
        _head(handler, 10 << 30)
        handler.wfile.write(b"x" * 1000)

    with pytest.raises(FetchError, match="over the limit"):
        fetch(serve(huge), HttpPolicy(timeout=5, retries=3, backoff=0, max_bytes=1 << 20), lambda body: body.read())
    assert len(tries) == 1


def test_a_body_without_a_length_is_cut_off_at_the_limit(serve) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        _head(handler, None)
        for _ in range(64):
            handler.wfile.write(b"x" * (1 << 16))

    with pytest.raises(FetchError, match="over the limit"):
        fetch(serve(endless), HttpPolicy(timeout=5, retries=0, backoff=0, max_bytes=1 << 20), lambda b: b.read())


def test_only_http_redirects_are_followed(serve) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]

    def to_ftp(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", f"ftp://127.0.0.1:{port}/x_red.tif.gz")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with listener, pytest.raises(FetchError, match="redirect to ftp:// is not followed"):
        try:
            fetch(serve(to_ftp), HttpPolicy(timeout=3, retries=0, backoff=0), lambda body: body.read())
        finally:
            with pytest.raises(TimeoutError):  # no connection reached the ftp:// address
                listener.accept()


def test_a_multi_page_tiff_is_refused_before_it_is_decoded() -> None:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((12, 64, 64), np.uint16))  # 12 pages of one channel
    for data, name in ((buffer.getvalue(), "x_red.tif"), (gzip.compress(buffer.getvalue()), "x_red.tif.gz")):
        with pytest.raises(InputError, match="12 pages; a channel file holds one plane"):
            decode_channel(data, name)


_PEAK = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from hpasc.core.http import FetchError, HttpPolicy
    from hpasc.stages.download.stage import fetch_channel
    path = Path(sys.argv[1])
    try:
        fetch_channel(path.as_uri(), HttpPolicy(timeout=30, retries=0, backoff=0))
    except FetchError as exc:
        print(str(exc)[:120], file=sys.stderr)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)
""")


def _peak_mb(path) -> int:
    result = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True,
                            check=True, timeout=120, env={"HPASC_MAX_INFLATED_MB": "96", "PATH": "/usr/bin:/bin"})
    return int(result.stdout.split()[-1])


def test_memory_stays_flat_for_a_large_body_and_a_bomb(tmp_path) -> None:
    small = tmp_path / "small_red.tif.gz"
    small.write_bytes(gzip.compress(b"not a tiff"))
    large = tmp_path / "large_red.tif.gz"  # 80 MiB that is not gzip: read, then refused
    with large.open("wb") as handle:
        for _ in range(80):
            handle.write(np.random.default_rng(0).bytes(1 << 20))
    bomb = tmp_path / "bomb_red.tif.gz"  # 200 MiB of zeros: past the 96 MiB limit
    with gzip.open(bomb, "wb") as handle:
        for _ in range(200):
            handle.write(bytes(1 << 20))
    baseline = _peak_mb(small)
    # Before: the large body was held whole (+80 MiB and more), the bomb up to its limit (+96 MiB).
    assert _peak_mb(large) - baseline < 24
    assert _peak_mb(bomb) - baseline < 24
