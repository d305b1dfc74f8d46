"""A local web page for scoring cells of one class 1..5 by eye: manual relabelling.

``hpasc-label-tool --dataset DIR --class C --out relabel/ [--checkpoint CKPT]`` serves,
on 127.0.0.1 only, a page that shows the cells of ``DIR`` whose image labels contain class ``C``
one at a time (a colour composite with per-channel toggles and a contrast slider). Keys 1-5 score
the cell and move on, ArrowLeft / ArrowRight navigate, ``u`` undoes the last score.

Each score is appended to ``{out}/{C}.txt`` as ``{cell_id} {score}`` and fsynced the moment it is
given, so killing the server loses nothing; a cell listed several times takes its last score (as
:func:`hpasc.labels.folders.read_label_folder` reads it). Undo rewrites the file atomically
without its last line, so the file always reads back as exactly the state the page shows. A
restart reads the file and resumes at the first unscored cell.

Cells come in cell-id order; with ``--checkpoint`` the most uncertain first (|p_C - 0.5|
ascending, the checkpoint's probability of class ``C``), where a score teaches the model most.

Who may do what: the server answers only requests whose ``Host`` is its own loopback address and
port (a DNS-rebinding page names another host). A write (score, undo) must also come from its own
page: JSON, no foreign ``Origin``, and the run's secret token, which the page takes from the URL
the tool prints and sends in a header that no other origin can set without the server's consent.
Bodies are capped at :data:`MAX_BODY` bytes, and a whole request (its line, headers and body, however
slowly they trickle) must arrive within :data:`REQUEST_TIME_S` of its first wait, or the connection
is closed (a body cut off is answered 408 first). One
tool at a time per label folder (an exclusive lock), so that undo never drops another's scores.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from hpasc.cells.provenance import label_folder_made_on
from hpasc.cellstore import CellStore, open_cells
from hpasc.core import atomic, locks
from hpasc.core.classes import CLASS_NAMES, parse_labels
from hpasc.core.errors import InputError, describe_os_error
from hpasc.core.images import composite, encode_png
from hpasc.core.runtime import CommonOptions
from hpasc.labels import files as label_files
from hpasc.labels.files import SCORES, label_lines
from hpasc.models.precision import Precision

log = logging.getLogger(__name__)

# The page (HTML and its script, no CDN), shipped as package data beside this module.
PAGE = resources.files("hpasc.tools").joinpath("label_tool.html").read_text(encoding="utf-8")

HOST = "127.0.0.1"  # loopback only: the page writes label files
LOCAL_NAMES = (HOST, "localhost")
TOKEN_HEADER = "X-Label-Token"
MAX_BODY = 4096  # a score or an undo is a few dozen bytes
REQUEST_TIME_S = 10.0
CHANNEL_KEYS = "rgby"  # the query letters of CHANNELS (red, green, blue, yellow), in tile order


@dataclass(frozen=True)
class Cell:
    """One cell to score: its row in the store and what the page shows about it."""

    row: int
    cell_id: str
    image_id: str
    labels: tuple[int, ...]


def read_scores(path: Path) -> list[tuple[str, int]]:
    """The ``(cell_id, score)`` lines of a label file in file order ([] if it does not exist)."""
    return label_files.read_scores(path) if path.is_file() else []


@dataclass
class Session:
    """The cells of one class and their scores, kept in step with the label file ``path``."""

    store: CellStore
    cells: list[Cell]
    path: Path
    lines: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.lines = read_scores(self.path)
        self._ids = {cell.cell_id for cell in self.cells}

    @property
    def scores(self) -> dict[str, int]:
        """Cell id -> its last score in the file."""
        return dict(self.lines)

    def progress(self) -> tuple[int, int]:
        """(scored, total) over this session's cells."""
        return len(self._ids & self.scores.keys()), len(self.cells)

    def first_unscored(self) -> int:
        """The index of the first cell without a score (the last cell when all are scored)."""
        scores = self.scores
        return next((i for i, c in enumerate(self.cells) if c.cell_id not in scores), len(self.cells) - 1)

    def score(self, index: int, value: int) -> None:
        """Append ``{cell_id} {value}`` to the file and make it durable before returning; a write
        that fails (a full disk, a file size limit) is cut back off, so the file stays whole, and
        its OSError is raised."""
        if value not in SCORES:
            raise ValueError(f"score {value} outside 0..5")
        cell_id = self.cells[index].cell_id
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _append_whole(self.path, label_lines([(cell_id, str(value))]).encode())
            self.lines.append((cell_id, value))

    def undo(self) -> int | None:
        """Drop the file's last line (atomically) and return its cell's index, or None when
        there is nothing to undo or that cell is not one of this session's."""
        with self.lock:
            if not self.lines:
                return None
            cell_id, _ = self.lines.pop()
            atomic.write_text(self.path, label_lines((c, str(s)) for c, s in self.lines))
        return next((i for i, c in enumerate(self.cells) if c.cell_id == cell_id), None)

    def describe(self, index: int) -> dict[str, object]:
        """What the page shows about cell ``index``."""
        cell = self.cells[index]
        scored, total = self.progress()
        return {"index": index, "cell_id": cell.cell_id, "image_id": cell.image_id,
                "labels": [f"{c} {CLASS_NAMES[c]}" for c in cell.labels],
                "score": self.scores.get(cell.cell_id), "scored": scored, "total": total}

    def tile_png(self, index: int, channels: str, contrast: float) -> bytes:
        """The cell's composite as PNG, with only ``channels`` (letters of rgby) and its
        intensities multiplied by ``contrast``."""
        tile = self.store[self.cells[index].row].copy()
        for channel, key in enumerate(CHANNEL_KEYS):
            if key not in channels:
                tile[channel] = 0
        rgb = np.clip(composite(tile).astype(np.float32) * contrast, 0, 255).astype(np.uint8)
        return encode_png(rgb)


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` durably, or not at all: unbuffered, so nothing is left to flush after a
    failure, and cut back to the old end when a write fails part-way (a torn line would glue
    itself onto the next one)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        whole = os.lseek(fd, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, whole)
            raise
    finally:
        os.close(fd)


def cells_of_class(store: CellStore, class_index: int) -> list[Cell]:
    """The store's cells whose image labels contain ``class_index``, sorted by cell id."""
    table = store.table
    cells = []
    for row, (cell_id, image_id, text) in enumerate(zip(table["cell_id"], table["image_id"],
                                                        table["labels"].fillna(""))):
        labels = tuple(parse_labels(text))
        if class_index in labels:
            cells.append(Cell(row, str(cell_id), str(image_id), labels))
    return sorted(cells, key=lambda c: c.cell_id)


def most_uncertain_first(store: CellStore, cells: list[Cell], class_index: int, checkpoint: Path,
                         options: CommonOptions, device: str, precision: Precision = Precision()) -> list[Cell]:
    """``cells`` ordered by |p - 0.5| ascending, p the checkpoint's probability of the class
    (ties keep cell-id order: the sort is stable)."""
    import torch  # only this option needs torch; the page itself starts without it

    from hpasc.core.runtime import resolve_device
    from hpasc.models.runner import ModelRunner
    from hpasc.stages.train.data import CellSet
    from hpasc.stages.train.predict import score_rows

    runner = ModelRunner.load(checkpoint, resolve_device(device), precision)
    table = store.table.assign(store=0, row=np.arange(len(store.table)))
    rows = np.array([cell.row for cell in cells], dtype=np.int64)
    with torch.inference_mode():
        probabilities = score_rows(runner, CellSet([store], table), rows, 64, options)
    distance = np.abs(probabilities[:, class_index] - 0.5)
    return [cells[i] for i in np.argsort(distance, kind="stable")]


class Refused(Exception):
    """A request the tool does not serve: its HTTP status and a one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _strict_int(body: dict, key: str) -> int:
    value = body.get(key)
    if type(value) is not int:  # bool is an int subclass, and 3.9 or "4" are not scores
        raise Refused(HTTPStatus.BAD_REQUEST, f"{key} must be an integer, got {json.dumps(value)}")
    return value


class _Handler(BaseHTTPRequestHandler):
    """The page, the cells' JSON and tiles, and the score / undo actions of one :class:`Session`."""

    session: Session  # set on the subclass that make_server builds
    token: str
    request_time_s: float = REQUEST_TIME_S

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        # A socket timeout holds per read: a client sending a byte now and then would keep a
        # thread forever (slowloris). The deadline holds for the whole request.
        self._reader.deadline = time.monotonic() + self.request_time_s
        super().handle_one_request()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(data).encode(), "application/json", status)

    def _refuse(self, refused: Refused) -> None:
        log.warning("refused %s %s from %s: %s", self.command, self.path.split("?")[0],
                    self.headers.get("Origin") or self.headers.get("Host") or "?", refused)
        self.close_connection = True
        self._json({"error": str(refused)}, refused.status)

    def _index(self, value: int) -> int:
        if not 0 <= value < len(self.session.cells):
            raise Refused(HTTPStatus.BAD_REQUEST, f"no cell {value}")
        return value

    def _own_names(self) -> set[str]:
        port = self.server.server_address[1]
        return {f"{name}:{port}" for name in LOCAL_NAMES}

    def _check_host(self) -> None:
        # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
        if self.headers.get("Host") not in self._own_names():
            raise Refused(HTTPStatus.FORBIDDEN, f"Host {self.headers.get('Host')!r} is not this tool's")

    def _check_writer(self) -> None:
        origin = self.headers.get("Origin")
        if origin is not None and origin not in {f"http://{name}" for name in self._own_names()}:
            raise Refused(HTTPStatus.FORBIDDEN, f"a write from another origin ({origin})")
        if self.headers.get_content_type() != "application/json":
            raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "a write must be application/json")
        if not secrets.compare_digest(self.headers.get(TOKEN_HEADER, ""), self.token):
            raise Refused(HTTPStatus.FORBIDDEN, f"a write without this run's token ({TOKEN_HEADER})")

    def _body(self) -> dict:
        text = self.headers.get("Content-Length")
        if text is None:
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if not (text.strip().isascii() and text.strip().isdigit()):  # '²' is a digit to isdigit, not to int
            raise Refused(HTTPStatus.BAD_REQUEST, f"Content-Length {text!r} is not a byte count")
        if int(text) > MAX_BODY:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body of at most {MAX_BODY} bytes")
        try:
            data = self.rfile.read(int(text))
        except TimeoutError:
            raise Refused(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from None
        if len(data) < int(text):
            raise Refused(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
        try:
            body = json.loads(data or b"{}", parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise Refused(HTTPStatus.BAD_REQUEST, f"not valid JSON ({str(exc)[:80]})") from None
        if not isinstance(body, dict):
            raise Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def do_GET(self) -> None:
        try:
            self._check_host()
            self._get()
        except Refused as refused:
            self._refuse(refused)
        except ValueError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)

    def _get(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = parse_qs(url.query)
        if url.path == "/":
            self._send(PAGE.encode(), "text/html; charset=utf-8")
        elif url.path == "/state":
            scored, total = self.session.progress()
            self._json({"current": self.session.first_unscored(), "scored": scored, "total": total})
        elif len(parts) == 2 and parts[0] == "cell" and parts[1].isdigit():
            self._json(self.session.describe(self._index(int(parts[1]))))
        elif len(parts) == 2 and parts[0] == "tile" and parts[1].endswith(".png") and parts[1][:-4].isdigit():
            contrast = float(query.get("contrast", ["1"])[0])
            if not 0.0 < contrast <= 10.0:
                raise ValueError(f"contrast {contrast} outside (0, 10]")
            png = self.session.tile_png(self._index(int(parts[1][:-4])), query.get("channels", ["rgby"])[0],
                                        contrast)
            self._send(png, "image/png")
        else:
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        try:
            self._check_host()
            self._check_writer()
            body = self._body()
            if self.path == "/score":
                index = self._index(_strict_int(body, "index"))
                score = _strict_int(body, "score")
                if score not in SCORES:
                    raise Refused(HTTPStatus.BAD_REQUEST, f"score {score} outside 0..5")
                try:
                    self.session.score(index, score)
                except OSError as exc:
                    raise Refused(HTTPStatus.INSUFFICIENT_STORAGE,
                                  f"the score was not saved ({describe_os_error(exc)}); free space and score again")
                self._json(self.session.describe(index))
            elif self.path == "/undo":
                self._json({"index": self.session.undo()})
            else:
                self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        except Refused as refused:
            self._refuse(refused)


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes, each read waiting only until :attr:`deadline` (a monotonic time)."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection, self.deadline = connection, math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.connection.settimeout(left)
        return self.connection.recv_into(buffer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-answer is its own business, not a traceback on the terminal.
        log.debug("request from %s failed", client_address, exc_info=True)


def make_server(session: Session, port: int, token: str, request_time_s: float = REQUEST_TIME_S) -> ThreadingHTTPServer:
    """A server for ``session`` bound to 127.0.0.1:``port`` (0: a free port), not yet serving;
    writes need ``token``, and a request must arrive within ``request_time_s``."""
    handler = type("Handler", (_Handler,), {"session": session, "token": token, "request_time_s": request_time_s})
    return _Server((HOST, port), handler)


def open_session(dataset: Path, class_index: int, out: Path, checkpoint: Path | None = None,
                 options: CommonOptions | None = None, device: str = "auto",
                 precision: Precision = Precision()) -> Session:
    """The session of ``class_index``'s cells of ``dataset``, scores in ``out/{class}.txt``."""
    store = open_cells(dataset)
    if "labels" not in store.table.columns:
        raise InputError(f"{dataset}: the cell table has no labels column")
    cells = cells_of_class(store, class_index)
    if not cells:
        raise InputError(f"{dataset}: no cell's image is labelled with class {class_index}")
    label_folder_made_on(out, store.root)
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise InputError(f"checkpoint {checkpoint} does not exist")
        cells = most_uncertain_first(store, cells, class_index, checkpoint, options or CommonOptions(),
                                     device, precision)
    return Session(store, cells, out / f"{class_index}.txt")


@dataclass(frozen=True)
class LabelToolRun:
    """Score the cells of ``class_index`` of ``dataset`` into ``out``, served on 127.0.0.1:``port``
    (0: a free one), most uncertain first by ``checkpoint`` if given."""

    dataset: Path
    class_index: int
    out: Path
    checkpoint: Path | None = None
    port: int = 8765
    precision: Precision = Precision()


def serve_labels(run: LabelToolRun, options: CommonOptions) -> None:
    """Serve the page until interrupted, holding the label folder (one tool at a time)."""
    with locks.exclusive(run.out, "another label tool", wait=False):
        atomic.remove_abandoned(run.out)
        session = open_session(run.dataset, run.class_index, run.out, run.checkpoint, options, options.device,
                               run.precision)
        token = secrets.token_urlsafe(16)
        try:
            server = make_server(session, run.port, token)
        except OSError as exc:
            raise InputError(f"cannot listen on {HOST}:{run.port} ({exc.strerror})") from None
        scored, total = session.progress()
        url = f"http://{HOST}:{server.server_address[1]}/?token={token}"
        log.info("class %d: %d of %d cells scored, scores go to %s", run.class_index, scored, total, session.path)
        log.info("serving %s", url)
        print(f"serving {url}", flush=True)  # on stdout too, for whoever started the tool to read
        with server:
            server.serve_forever()
