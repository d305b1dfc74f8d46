"""The label tool end to end: the page in headless Chromium (driven through chromedriver's
WebDriver HTTP protocol, plain JSON over urllib) scores cells into the label file; the server
is bound to loopback only."""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpasc.tools.label_tool import make_server, open_session
from tests.conftest import REPO, make_dataset, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CLASS = 1  # present in the labels of make_dataset(seed=3)'s images
TIMEOUT_S = 20.0
WEBDRIVER_KEYS = {"ArrowLeft": "\ue012", "ArrowRight": "\ue014"}  # the WebDriver spec's code points


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = make_dataset(tmp_path_factory.mktemp("label_tool"), images=6, size=256, tile=32, seed=3)
    return root / "dataset"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, body: object = None, method: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method or ("GET" if data is None else "POST"),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method or 'request'} {url}: {exc.code} {exc.read()[:500]!r}") from None


class Browser:
    """A headless Chromium session behind chromedriver: just the WebDriver calls the test needs."""

    def __init__(self, driver_url: str) -> None:
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": str(CHROMIUM), "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                              "--window-size=800,700"]}}
        session = _request(f"{driver_url}/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.url = f"{driver_url}/session/{session['value']['sessionId']}"

    def visit(self, page: str) -> None:
        """Navigate and wait for the page's load event (the WebDriver default)."""
        _request(f"{self.url}/url", {"url": page})

    def open(self, page: str) -> None:
        self.visit(page)
        wait_until(lambda: self.script("return document.body.dataset.ready === '1';"), "the page to load", TIMEOUT_S)

    def script(self, code: str) -> object:
        return _request(f"{self.url}/execute/sync", {"script": code, "args": []})["value"]

    def press(self, *keys: str) -> None:
        codes = [WEBDRIVER_KEYS.get(key, key) for key in keys]
        actions = [{"type": kind, "value": code} for code in codes for kind in ("keyDown", "keyUp")]
        _request(f"{self.url}/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def shown_cell(self) -> str:
        return str(self.script("return document.getElementById('cell-id').textContent;"))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(_request(f"{self.url}/screenshot")["value"]))

    def quit(self) -> None:
        _request(self.url, method="DELETE")


@pytest.fixture
def browser() -> Iterator[Browser]:
    # Fails rather than skips: the page is only tested here.
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), \
        "Chromium is missing: apt-get install chromium chromium-driver (scripts/test.sh does)"
    port = _free_port()
    driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        driver_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(driver_url), "chromedriver to start", TIMEOUT_S)
        session = Browser(driver_url)
        try:
            yield session
        finally:
            session.quit()
    finally:
        driver.terminate()
        driver.wait(timeout=TIMEOUT_S)


def _ready(driver_url: str) -> bool:
    try:
        return bool(_request(f"{driver_url}/status")["value"]["ready"])
    except OSError:
        return False


class Tool:
    """``python -m hpasc.commands.label_tool --port 0`` as a subprocess, and the URL it prints."""

    def __init__(self, dataset: Path, out: Path) -> None:
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hpasc.commands.label_tool", "--dataset", str(dataset), "--class", str(CLASS),
             "--out", str(out), "--port", "0", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        # A reader thread, so that a tool that never prints fails the test instead of hanging it.
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout],
                         daemon=True).start()
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            self.stop()
            raise AssertionError("the label tool printed no URL") from None
        assert line.startswith("serving http://127.0.0.1:"), line
        self.page = line.split()[1]  # with the run's token: what a user opens
        self.url = self.page.split("?")[0]

    def stop(self) -> None:
        self.process.kill()  # the hard way: every score must already be on disk
        self.process.wait(timeout=TIMEOUT_S)


def test_scores_undo_and_resume_in_the_browser(dataset: Path, browser: Browser, tmp_path: Path) -> None:
    out = tmp_path / "relabel"
    label_file = out / f"{CLASS}.txt"
    tool = Tool(dataset, out)
    try:
        cells = [_request(f"{tool.url}cell/{i}")["cell_id"] for i in range(3)]
        assert cells == sorted(cells)
        first, second, third = cells
        browser.open(tool.page)
        assert browser.shown_cell() == first
        browser.press("3", "5")
        wait_until(lambda: browser.shown_cell() == third, "the third cell", TIMEOUT_S)
        assert label_file.read_text() == f"{first} 3\n{second} 5\n"
        browser.press("u")
        wait_until(lambda: browser.shown_cell() == second, "undo to go back to the second cell", TIMEOUT_S)
        assert label_file.read_text() == f"{first} 3\n"
        browser.press("1")
        wait_until(lambda: browser.shown_cell() == third, "the third cell again", TIMEOUT_S)
        progress = browser.script("return document.getElementById('progress').textContent;")
        assert progress.startswith("2 / ")
        browser.press("ArrowLeft", "ArrowLeft")
        wait_until(lambda: browser.shown_cell() == first, "ArrowLeft to reach the first cell", TIMEOUT_S)
        assert browser.script("return document.getElementById('score').textContent;") == "3"
        browser.press("ArrowRight")
        wait_until(lambda: browser.shown_cell() == second, "ArrowRight to reach the second cell", TIMEOUT_S)
        # The cell's id is shown before its tile has loaded (slower while other tests run beside).
        wait_until(lambda: browser.script("return document.getElementById('tile').naturalWidth;") == 32,
                   "the second cell's 32 px tile to load", TIMEOUT_S)
        browser.screenshot(tmp_path / "label_tool.png")
    finally:
        tool.stop()
    assert label_file.read_text() == f"{first} 3\n{second} 1\n"
    assert (tmp_path / "label_tool.png").read_bytes().startswith(b"\x89PNG")

    tool = Tool(dataset, out)
    try:
        assert _request(f"{tool.url}state")["current"] == 2
        browser.open(tool.page)
        assert browser.shown_cell() == third
    finally:
        tool.stop()


def test_tile_channels_and_contrast(dataset: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    session = open_session(dataset, CLASS, tmp_path)

    def tile(channels: str, contrast: float) -> np.ndarray:
        png = session.tile_png(0, channels, contrast)
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    full, green = tile("rgby", 1.0), tile("g", 1.0)
    assert full.shape == (32, 32, 3) and green[..., 0].max() == 0 and green[..., 2].max() == 0
    assert green[..., 1].max() > 0
    assert tile("", 1.0).max() == 0
    assert tile("rgby", 3.0).astype(int).sum() > full.astype(int).sum()


def test_server_is_bound_to_loopback_only(dataset: Path, tmp_path: Path) -> None:
    server = make_server(open_session(dataset, CLASS, tmp_path), 0, "token")
    with server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            host, port = server.server_address[:2]
            assert host == "127.0.0.1"
            assert _request(f"http://127.0.0.1:{port}/state")["total"] > 0
            address = _outward_address()
            if address is not None:
                with pytest.raises(OSError), socket.create_connection((address, port), timeout=5):
                    pass
        finally:
            server.shutdown()


def _outward_address() -> str | None:
    """This machine's non-loopback address, if it has one (a UDP connect sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_checkpoint_orders_the_most_uncertain_cells_first(dataset: Path, tmp_path: Path, monkeypatch,
                                                           one_torch_thread: None) -> None:
    import numpy as np
    import torch

    import hpasc.stages.train.predict
    from hpasc.cells.tile_spec import TileSpec
    from hpasc.core.runtime import CommonOptions
    from hpasc.models.checkpoint import make_checkpoint, save_checkpoint
    from hpasc.models.registry import create_model
    from hpasc.models.spec import ModelSpec

    spec = ModelSpec("efficientnet-b0", 4, tuple(range(18)), TileSpec(32))
    torch.manual_seed(0)
    model = create_model(spec.arch, len(spec.outputs), spec.in_channels, spec.tile_size)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, make_checkpoint(model, spec, epoch=1, metrics=[], args={}))
    by_id = open_session(dataset, CLASS, tmp_path).cells
    # A fresh model scores every synthetic cell the same, so the probabilities are chosen here:
    # p_C = 0.95, 0.1, 0.45, 0.8, ... over the cells in cell-id order; the rows scored are checked.
    wanted = np.resize([0.95, 0.1, 0.45, 0.8, 0.6], len(by_id)).astype(np.float32)

    def fake_scores(runner, cells, rows, batch_size, options) -> np.ndarray:
        assert list(rows) == [c.row for c in by_id]
        scores = np.zeros((len(rows), 19), np.float32)
        scores[:, CLASS] = wanted
        return scores

    monkeypatch.setattr(hpasc.stages.train.predict, "score_rows", fake_scores)
    ordered = open_session(dataset, CLASS, tmp_path, checkpoint, CommonOptions(workers=1, progress=False),
                           "cpu").cells
    assert ordered == [by_id[i] for i in np.argsort(np.abs(wanted - 0.5), kind="stable")]
    assert ordered[:2] == [by_id[2], by_id[7]]  # p = 0.45, the closest to 0.5, ties in cell-id order
