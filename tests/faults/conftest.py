"""Helpers of the fault tests: synthetic images, a stage started as a terminal would start it
(its own process group, so that ^C reaches it and its workers alike), and its worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_script
from tests.test_infer import checkpoint  # noqa: F401 (a small trained model, for infer.py's faults)
from tests.test_label_tool import browser, dataset  # noqa: F401 (the label tool's dataset and Chromium)


@pytest.fixture(scope="session")
def many_images(tmp_path_factory) -> Path:
    """24 synthetic 768² images: a few seconds of work for two workers."""
    root = tmp_path_factory.mktemp("fault_images") / "images"
    made = run_script("-m", "hpasc.commands.synthetic", "-o", root, "-n", "24", "--size", "768", "--seed", "4",
                      "--no-progress")
    assert made.returncode == 0, made.stderr
    return root


class Stage:
    """A script running in its own process group, its stderr kept in a file."""

    def __init__(self, tmp_path: Path, *args: str | Path) -> None:
        self.stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}.txt"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        script = str(REPO / args[0]) if str(args[0]).endswith(".py") else str(args[0])
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, script, *map(str, args[1:])], cwd=REPO, env=env,
                                            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                            preexec_fn=_terminal_sigint)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def interrupt(self) -> None:
        """^C in a terminal: SIGINT to the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)

    def workers(self) -> list[int]:
        return children(self.process.pid)


def _terminal_sigint() -> None:
    # As in a terminal: a suite started in the background (`cmd &`, nohup) ignores SIGINT, and
    # its children would inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
