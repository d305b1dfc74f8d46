"""Items 1-3 and 14 of the fault matrix: the label tool serves only its own page. A page of
another origin cannot write a score (in headless Chromium), a foreign Host header is refused
(DNS rebinding), a write needs JSON and the run's token, malformed or oversized requests get a
400-class answer instead of a dropped connection, scores must be integers, a second tool on one
folder is a one-line error, and cell ids with spaces round-trip through the label file."""

from __future__ import annotations

import http.client
import json
import logging
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hpasc.core.errors import InputError
from hpasc.labels.folders import read_label_folder
from hpasc.tools.label_tool import make_server, open_session
from tests.conftest import assert_one_line_error, run_script
from tests.test_label_tool import CLASS, Browser, Tool

TOKEN = "test-token"


@pytest.fixture
def served(dataset: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The label tool in a thread on a free port: (port, its label file)."""
    session = open_session(dataset, CLASS, tmp_path / "relabel")
    server = make_server(session, 0, TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], session.path
    finally:
        server.shutdown()
        server.server_close()


def _post(port: int, body: bytes | str, headers: dict[str, str], path: str = "/score") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def _good_headers(port: int, **changes: str) -> dict[str, str]:
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "X-Label-Token": TOKEN,
               "Origin": f"http://127.0.0.1:{port}"}
    headers.update(changes)
    return {key: value for key, value in headers.items() if value}


def test_a_good_write_passes(served: tuple[int, Path]) -> None:
    port, label_file = served
    status, body = _post(port, json.dumps({"index": 0, "score": 4}), _good_headers(port))
    assert status == 200, body
    assert label_file.read_text().endswith(" 4\n")


def test_a_failed_score_write_leaves_the_file_whole_and_is_answered(served: tuple[int, Path]) -> None:
    """A write that fails part-way (a file size limit; a full disk is the same error) is cut back and
    answered 507; the next score, once there is room, is a line of its own."""
    port, label_file = served
    assert _post(port, json.dumps({"index": 0, "score": 4}), _good_headers(port))[0] == 200
    size = label_file.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))  # room for 10 bytes of the next line
    try:
        status, body = _post(port, json.dumps({"index": 1, "score": 3}), _good_headers(port))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert status == 507 and "the score was not saved" in body["error"] and "free space" in body["error"]
    assert label_file.stat().st_size == size
    assert _post(port, json.dumps({"index": 2, "score": 5}), _good_headers(port))[0] == 200
    lines = label_file.read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split()) == 2 for line in lines), lines


@pytest.mark.parametrize("changes, status", [
    ({"Host": "evil.example:80"}, 403),
    ({"Host": "attacker.test"}, 403),
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ({"X-Label-Token": ""}, 403),
    ({"X-Label-Token": "guess"}, 403),
])
def test_foreign_writes_are_refused(served: tuple[int, Path], changes: dict[str, str], status: int) -> None:
    port, label_file = served
    answer, body = _post(port, json.dumps({"index": 0, "score": 5}), _good_headers(port, **changes))
    assert answer == status, body
    answer, _ = _post(port, "{}", _good_headers(port, **changes), "/undo")
    assert answer == status
    assert not label_file.exists()


def test_a_foreign_host_cannot_read_either(served: tuple[int, Path]) -> None:
    port, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request("GET", "/cell/0", headers={"Host": "rebound.example"})
    assert connection.getresponse().status == 403
    connection.close()


@pytest.mark.parametrize("body", [
    '{"index": 0, "score": true}', '{"index": 0, "score": 3.9}', '{"index": 0, "score": "4"}',
    '{"index": 0, "score": 9}', '{"index": "0", "score": 4}', '{"index": 0, "score": Infinity}',
    '{"index": 0, "score": NaN}', "[1, 2]", "not json", "[" * 5000 + "]" * 5000, '{"index": 1e400, "score": 4}',
])
def test_bad_bodies_are_400(served: tuple[int, Path], body: str) -> None:
    port, label_file = served
    status, answer = _post(port, body, _good_headers(port))
    assert status in (400, 413), answer
    assert "error" in answer
    assert not label_file.exists()


def _raw(port: int, request: bytes, wait_s: float = 20) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as connection:
        connection.sendall(request)
        return connection.recv(65536)


@pytest.mark.parametrize("length, status", [("abc", b" 400 "), ("-5", b" 400 "), ("99999999", b" 413 "),
                                            ("1e3", b" 400 "), ("\xb2", b" 400 ")])  # ², one latin-1 byte
def test_malformed_content_length(served: tuple[int, Path], length: str, status: bytes) -> None:
    port, _ = served
    head = (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-Label-Token: {TOKEN}\r\nContent-Length: {length}\r\n\r\n").encode("latin-1")
    assert status in _raw(port, head + b'{"index": 0, "score": 4}').split(b"\r\n")[0] + b" "


def test_a_short_body_times_out_with_an_answer(served: tuple[int, Path]) -> None:
    port, label_file = served
    head = (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-Label-Token: {TOKEN}\r\nContent-Length: 200\r\n\r\n").encode()
    answer = _raw(port, head + b'{"index": 0,', wait_s=30)
    assert answer.split(b"\r\n")[0].split()[1] == b"408"
    assert not label_file.exists()


def test_a_page_of_another_origin_cannot_write(served: tuple[int, Path], browser: Browser, tmp_path: Path,
                                               caplog) -> None:
    port, label_file = served
    tool = f"http://127.0.0.1:{port}"
    attack = tmp_path / "site"
    attack.mkdir()
    (attack / "attack.html").write_text(f"""<!doctype html><body><script>
const body = JSON.stringify({{index: 0, score: 5}});
const tries = [
  fetch("{tool}/score", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body}}),
  fetch("{tool}/score", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body}}),
  fetch("{tool}/undo", {{method: "POST", mode: "no-cors", body: "{{}}"}}),
];
Promise.allSettled(tries).then(() => {{ document.body.dataset.ready = "1"; }});
</script></body>""")
    site = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(attack)))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        with caplog.at_level(logging.WARNING, logger="hpasc.tools.label_tool"):
            browser.open(f"http://127.0.0.1:{site.server_address[1]}/attack.html")
    finally:
        site.shutdown()
        site.server_close()
    assert not label_file.exists()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused, "the attack's requests never reached the tool, so the test proves nothing"


def test_a_second_tool_on_one_folder_is_refused(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "relabel"
    first = Tool(dataset, out)
    try:
        result = run_script("-m", "hpasc.commands.label_tool", "--dataset", dataset, "--class", CLASS, "--out", out,
                            "--port", "0", "--no-progress", timeout=120)
        assert_one_line_error(result, str(out), "another label tool")
    finally:
        first.stop()


def test_cell_ids_with_spaces_round_trip(tmp_path: Path) -> None:
    from hpasc.labels.files import label_lines, read_scores

    ids = ["well A1 field 2_1", "well A1 field 2_12", "plain_3"]
    path = tmp_path / "4.txt"
    path.write_text(label_lines((cell_id, "5") for cell_id in ids))
    assert [cell_id for cell_id, _ in read_scores(path)] == ids
    assert set(read_label_folder(tmp_path)[4]) == set(ids)
    with pytest.raises(ValueError):
        label_lines([(" leading_1", "5")])
    with pytest.raises(ValueError):
        label_lines([("new\nline_1", "5")])


def test_a_score_that_only_looks_like_a_digit_is_one_line(tmp_path: Path) -> None:
    """'²' passes str.isdigit but not int: the label tool's reader of a score file (which resumes a
    session) refused it with a traceback; now with the line, as `hpasc-labels inspect` does."""
    from hpasc.labels.files import read_scores

    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "4.txt").write_text("plain_3 5\nplain_4 \u00b2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"4.txt:2: score '²'"):
        read_scores(folder / "4.txt")
    assert_one_line_error(run_script("-m", "hpasc.commands.labels", "inspect", folder), "4.txt:2: '²'")


@pytest.fixture
def served_briefly(dataset: Path, tmp_path: Path) -> Iterator[int]:
    """The label tool with a 2 s limit per request, in a thread: its port."""
    server = make_server(open_session(dataset, CLASS, tmp_path / "relabel"), 0, TOKEN, request_time_s=2.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _trickle(port: int, head: bytes, drip: bytes, seconds: float) -> tuple[float, bytes]:
    """Send ``head``, then ``drip`` a byte every 0.3 s until the server answers or hangs up:
    (seconds until then, what it answered)."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as connection:
        connection.sendall(head)
        for byte in drip:
            if select.select([connection], [], [], 0.3)[0]:
                break
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                break
        answer = connection.recv(65536) if select.select([connection], [], [], seconds)[0] else b"(nothing)"
    return time.monotonic() - began, answer


def test_headers_that_trickle_in_are_cut_off_at_the_request_limit(served_briefly: int) -> None:
    # Slowloris (issue 29, item 13): before, each byte restarted a 10 s wait, so headers had no limit.
    port = served_briefly
    elapsed, answer = _trickle(port, b"GET /state HTTP/1.1\r\n", b"X-Slow: " + b"a" * 40 + b"\r\n\r\n", 10)
    assert elapsed < 3.5 and answer == b""


def test_a_body_that_trickles_in_is_answered_408_at_the_request_limit(served_briefly: int) -> None:
    port = served_briefly
    head = (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"X-Label-Token: {TOKEN}\r\nContent-Length: 60\r\n\r\n").encode()
    elapsed, answer = _trickle(port, head, b'{"index": 0, "score": 4}'.ljust(60), 10)
    assert elapsed < 3.5 and answer.split(b"\r\n")[0].split()[1] == b"408"
