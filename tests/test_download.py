"""download_publichpa.py against a real HTTP server on 127.0.0.1 with failures mixed in."""

from __future__ import annotations

import os
import gzip
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from hpasc.core.errors import InputError
from hpasc.core.image_folder import scan_images
from hpasc.core.images import CHANNELS, write_png
from hpasc.labels.public_table import map_locations, read_public_csv
from hpasc.stages.download.stage import Selection, select_rows
from tests.conftest import assert_one_line_error, run_script

TIMEOUT = 0.4


class Behaviour:
    """What the server does for one path: a queue of one-off actions, then a steady one."""

    def __init__(self, steady: tuple, once: list[tuple] | None = None):
        self.steady = steady
        self.once = list(once or [])

    def next(self) -> tuple:
        return self.once.pop(0) if self.once else self.steady


class FakeHPA(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Behaviour] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeHPA

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append(self.path)
            behaviour = self.server.routes.get(self.path)
            action = behaviour.next() if behaviour else ("status", 404)
        kind, value = action
        if kind == "slow":
            time.sleep(value)
            kind, value = "ok", b"late"
        if kind == "status":
            self.send_error(value)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(value)))
        self.end_headers()
        if kind == "drop":  # announce the whole body, send half, hang up
            self.wfile.write(value[: len(value) // 2])
            self.close_connection = True
            return
        self.wfile.write(value)

    def log_message(self, *args) -> None:
        pass


def tif_gz(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return gzip.compress(buffer.getvalue())


def serve(routes: dict[str, Behaviour] | None = None) -> Iterator[FakeHPA]:
    """Run a FakeHPA with ``routes`` on 127.0.0.1 until the generator is closed (fixtures
    ``yield from`` it)."""
    fake = FakeHPA()
    fake.routes = dict(routes or {})
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


@pytest.fixture()
def server():
    yield from serve()


def _planes(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 65536, size=(40, 56), dtype=np.uint16) for c in CHANNELS}


def _serve(server: FakeHPA, name: str, planes: dict[str, np.ndarray],
           special: dict[str, Behaviour] | None = None) -> None:
    for channel, plane in planes.items():
        path = f"/plate/{name}_{channel}.tif.gz"
        server.routes[path] = (special or {}).get(channel) or Behaviour(("ok", tif_gz(plane)))


def _csv(path: Path, server: FakeHPA, rows: list[tuple[str, str, str, bool]]) -> Path:
    table = pd.DataFrame(
        [(f"{server.base}/plate/{name}", label, cellline, trainset)
         for name, label, cellline, trainset in rows],
        columns=["Image", "Label", "Cellline", "in_trainset"],
    )
    table["Label_idx"] = table["Label"].map(map_locations)
    table.to_csv(path, index=False)
    return path


def _download(csv: Path, out: Path, *extra: str):
    return run_script("download_publichpa.py", "-i", csv, "-o", out, "--timeout", TIMEOUT,
                      "--retries", "1", "--backoff", "0.01", "--workers", "4", "--no-progress",
                      *extra)


def _assert_arrived(out: Path, name: str, planes: dict[str, np.ndarray]) -> None:
    for channel, plane in planes.items():
        written = cv2.imread(str(out / f"{name}_{channel}.png"), cv2.IMREAD_UNCHANGED)
        assert written is not None, f"{name}_{channel}.png missing"
        assert written.dtype == np.uint16
        np.testing.assert_array_equal(written, plane)


def _files_of(out: Path, name: str) -> list[Path]:
    return sorted(out.glob(f"{name}_*"))


def test_download_with_failures_then_rerun(tmp_path: Path, server: FakeHPA) -> None:
    planes = {name: _planes(i) for i, name in enumerate(
        ["good1", "good2", "flaky", "dropped", "missing", "truncated", "slow", "intrain", "other"])}
    for name in ("good1", "good2", "intrain", "other"):
        _serve(server, name, planes[name])
    _serve(server, "flaky", planes["flaky"], {"green": Behaviour(
        ("ok", tif_gz(planes["flaky"]["green"])), once=[("status", 500)])})
    body = tif_gz(planes["dropped"]["blue"])
    _serve(server, "dropped", planes["dropped"], {"blue": Behaviour(("ok", body), once=[("drop", body)])})
    _serve(server, "missing", planes["missing"], {"yellow": Behaviour(("status", 404))})
    broken = tif_gz(planes["truncated"]["blue"])
    _serve(server, "truncated", planes["truncated"],
           {"blue": Behaviour(("ok", broken[: len(broken) // 2]))})
    _serve(server, "slow", planes["slow"], {"red": Behaviour(("slow", 3 * TIMEOUT))})
    csv = _csv(tmp_path / "kaggle_2021.tsv", server, [
        ("good1", "Cytosol,Nucleoplasm", "U-2 OS", False),
        ("good2", "Mitochondria", "A549", False),
        ("flaky", "Vesicles,Peroxisomes", "HeLa", False),
        ("dropped", "Microtubules", "HeLa", False),
        ("missing", "Nucleoli", "HeLa", False),
        ("truncated", "Golgi apparatus", "HeLa", False),
        ("slow", "Centrosome", "HeLa", False),
        ("intrain", "Cytosol", "HeLa", True),
        ("other", "Rods & Rings", "HeLa", False),
    ])
    out = tmp_path / "publichpa"
    out.mkdir()
    leftover = out / "slow_red.png"  # a partial set from an earlier crash
    leftover.write_bytes(b"partial")

    result = _download(csv, out)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("good1", "good2", "flaky", "dropped"):
        _assert_arrived(out, name, planes[name])
    for name in ("missing", "truncated", "slow", "intrain", "other"):
        assert _files_of(out, name) == [], f"partial or unwanted files for {name}"
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    failures = pd.read_csv(out / "failures.csv").set_index("ID")["reason"]
    assert sorted(failures.index) == ["missing", "slow", "truncated"]
    assert "HTTP 404" in failures["missing"]
    assert "gzip" in failures["truncated"]
    assert "timed out" in failures["slow"]
    labels = pd.read_csv(out / "labels.csv", dtype=str).set_index("ID")["Label"].to_dict()
    assert labels == {"good1": "16|0", "good2": "14", "flaky": "17", "dropped": "10"}
    assert not any("intrain" in r or "other" in r for r in server.requests)
    assert (out / "manifest.json").is_file()

    # The server recovers; a re-run fetches only the images that are not complete on disk.
    for name in ("missing", "truncated", "slow"):
        _serve(server, name, planes[name])
    server.requests.clear()
    result = _download(csv, out)

    assert result.returncode == 0, result.stderr
    fetched = {r.split("/")[-1].rsplit("_", 1)[0] for r in server.requests}
    assert fetched == {"missing", "truncated", "slow"}
    for name in ("good1", "good2", "flaky", "dropped", "missing", "truncated", "slow"):
        _assert_arrived(out, name, planes[name])
    assert pd.read_csv(out / "failures.csv").empty
    assert len(pd.read_csv(out / "labels.csv")) == 7


def test_shards_split_the_selection(tmp_path: Path, server: FakeHPA) -> None:
    names = [f"img{i}" for i in range(5)]
    for i, name in enumerate(names):
        _serve(server, name, _planes(i))
    csv = _csv(tmp_path / "public.csv", server, [(n, "Cytosol", "HeLa", False) for n in names])
    out = tmp_path / "out"
    for shard in ("0/2", "1/2"):
        assert _download(csv, out, "--shard", shard).returncode == 0
    parts = [pd.read_csv(out / f"labels-shard{k}of2.csv")["ID"].tolist() for k in (0, 1)]
    assert sorted(parts[0] + parts[1]) == names
    assert not set(parts[0]) & set(parts[1])
    assert (out / "manifest-shard1of2.json").is_file()


def test_selection_filters(tmp_path: Path) -> None:
    path = tmp_path / "public.tsv"
    pd.DataFrame({
        "Image": [f"http://x/1/{n}" for n in "abcdef"],
        "Label": ["Cytosol", "Nucleoli,Cytosol", "Rods & Rings", "Mitotic spindle", "Cytosol", "Cytosol"],
        "Cellline": ["HeLa", "A549", "HeLa", "HeLa", "HeLa", "A549"],
        "in_trainset": ["False", "False", "False", "False", "True", "False"],
    }).to_csv(path, sep="\t", index=False)
    table = read_public_csv(path)
    assert table["Label_idx"].tolist() == ["16", "2|16", "", "11", "16", "16"]
    assert select_rows(table, Selection())["ID"].tolist() == ["a", "b", "d", "f"]
    assert select_rows(table, Selection(celllines=("A549",)))["ID"].tolist() == ["b", "f"]
    assert select_rows(table, Selection(labels=(2, 11)))["ID"].tolist() == ["b", "d"]
    assert select_rows(table, Selection(include_trainset=True))["ID"].tolist() == ["a", "b", "d", "e", "f"]
    assert select_rows(table, Selection(limit=2))["ID"].tolist() == ["a", "b"]


def test_bad_csv_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(_download(tmp_path / "absent.csv", tmp_path / "out"), "does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text("Image,Label\nhttp://x/1/a,Cytosol\n")
    with pytest.raises(InputError, match="Cellline, in_trainset"):
        read_public_csv(bad)
    assert_one_line_error(_download(bad, tmp_path / "out"), "missing column")
    assert not (tmp_path / "out").exists()


def test_offline_mirror_round_trip(tmp_path: Path) -> None:
    """hpasc.stages.download.mirror + download_publichpa.py over file:// URLs give back the source images."""
    source = tmp_path / "train"
    labels = {"img-a": "16|0", "img-b": "11|2", "img-c": "18"}
    for seed, image_id in enumerate(labels):
        for channel, plane in _planes(seed).items():
            write_png(source / f"{image_id}_{channel}.png", plane)
    pd.DataFrame({"ID": list(labels), "Label": list(labels.values())}).to_csv(
        source / "train.csv", index=False)

    made = run_script("-m", "hpasc.commands.mirror", "-i", source, "-o", tmp_path / "mirror", "--no-progress")
    assert made.returncode == 0, made.stderr
    result = _download(tmp_path / "mirror" / "kaggle_2021.tsv", tmp_path / "out")

    assert result.returncode == 0, result.stderr
    original, copy = scan_images(source), scan_images(tmp_path / "out")
    assert copy.ids == original.ids
    for image_id in original.ids:
        np.testing.assert_array_equal(copy.read(image_id), original.read(image_id))
    written = pd.read_csv(tmp_path / "out" / "labels.csv", dtype=str)
    assert dict(zip(written["ID"], written["Label"])) == labels

    # A re-run keeps what is mirrored; a source changed since is mirrored again (issue 29, item 5).
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "mirror").glob("*.tif.gz")}
    newer = stamps["img-b_red.tif.gz"] + 10**9
    os.utime(source / "img-b_green.png", ns=(newer, newer))
    again = run_script("-m", "hpasc.commands.mirror", "-i", source, "-o", tmp_path / "mirror", "--no-progress")
    assert again.returncode == 0 and "2 image(s) mirrored before, kept" in again.stderr
    changed = {name for name, stamp in stamps.items() if (tmp_path / "mirror" / name).stat().st_mtime_ns != stamp}
    assert changed == {f"img-b_{channel}.tif.gz" for channel in ("red", "green", "blue", "yellow")}
