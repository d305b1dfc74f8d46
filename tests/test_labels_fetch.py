"""``hpasc-labels fetch``: the 4th place's label folder downloaded from a real HTTP server on
127.0.0.1 laid out as their repository, checked against the pinned commit's entry counts."""

from __future__ import annotations

import filecmp
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpasc.core.errors import InputError
from hpasc.core.http import HttpPolicy
from hpasc.labels.fourth_place_source import (ENV_VAR, PINNED_ENTRIES, count_mismatches, default_folder,
                                              fetch_fourth_place_labels, find_fourth_place_labels)
from tests.conftest import assert_one_line_error, run_script
from tests.test_download import Behaviour, FakeHPA, serve

FAST = HttpPolicy(timeout=5, retries=0, backoff=0)


def stand_in(name: str, entries: int) -> bytes:
    """A file of ``name``'s kind holding ``entries`` made-up ids (score 1 is in every class's map)."""
    if name.endswith(".p"):
        return pickle.dumps({f"cell{i}_0" for i in range(entries)})
    return "".join(f"cell{i}_0 1\n" for i in range(entries)).encode()


STAND_INS = {name: stand_in(name, entries) for name, entries in PINNED_ENTRIES.items()}


def routes(files: dict[str, bytes]) -> dict[str, Behaviour]:
    return {f"/theirs/{name}": Behaviour(("ok", body)) for name, body in files.items()}


@pytest.fixture()
def server() -> Iterator[FakeHPA]:
    yield from serve(routes(STAND_INS))


def fetch(server: FakeHPA, out: Path, *extra: str):
    env = {**os.environ, "HPASC_CACHE": str(out.parent / "cache")}
    return run_script("-m", "hpasc.commands.labels", "fetch", "-o", out, "--base-url", f"{server.base}/theirs",
                      "--no-progress", *extra, env=env)


def test_fetch_keeps_a_folder_with_the_pinned_counts(server: FakeHPA, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    result = fetch(server, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"4th-place labels: {out} (544928 entries of "
                                     f"CroDoc/HPA2021-data-centric-approach@591724b); use it as --relabel {out}")
    assert count_mismatches(out) == [] and (out / "source.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels"]  # no partial folder left
    assert len(server.requests) == 36
    again = fetch(server, out)
    assert again.returncode == 0 and "holds the 4th place's labels already" in again.stderr
    assert len(server.requests) == 36  # checked, not fetched again
    inspect = run_script("-m", "hpasc.commands.labels", "inspect", out)
    assert inspect.stdout.splitlines()[-1] == "labels: 544928 entries, 17 classes"


def test_other_counts_are_refused_in_one_line_and_nothing_is_kept(tmp_path: Path) -> None:
    short = {**STAND_INS, "relabel/1.txt": stand_in("relabel/1.txt", 39988)}
    for server in serve(routes(short)):
        result = fetch(server, tmp_path / "labels")
    assert_one_line_error(result, "is not the 4th place's labels of CroDoc/HPA2021-data-centric-approach@591724b",
                          "relabel/1.txt has 39988 entries where the pinned commit's has 39989", "refused")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_fetch_goes_on_from_the_files_it_has(tmp_path: Path) -> None:
    broken = routes(STAND_INS)
    broken["/theirs/validation/9.txt"] = Behaviour(("status", 404))
    target = tmp_path / "labels"
    for server in serve(broken):
        with pytest.raises(InputError, match=r"could not fetch validation/9.txt \(FetchError: HTTP 404.*run the same"):
            fetch_fourth_place_labels(target, f"{server.base}/theirs", policy=FAST, progress=False)
    assert not target.exists()
    partial = tmp_path / ".labels.partial"
    assert (partial / "relabel" / "1.txt").is_file() and not (partial / "validation" / "9.txt").exists()
    for server in serve(routes(STAND_INS)):
        assert fetch_fourth_place_labels(target, f"{server.base}/theirs", policy=FAST, progress=False) == target
        after_404 = list(PINNED_ENTRIES).index("validation/9.txt")
        assert server.requests == [f"/theirs/{name}" for name in list(PINNED_ENTRIES)[after_404:]]
    assert count_mismatches(target) == [] and not partial.exists()


def test_a_page_that_is_not_a_label_file_is_refused(tmp_path: Path) -> None:
    html = {**STAND_INS, "auto-relabel/0.p": b"<html><body>Sign in</body></html>"}
    for server in serve(routes(html)):
        with pytest.raises(InputError, match=r"could not fetch auto-relabel/0.p .*not a pickled set of cell ids"):
            fetch_fourth_place_labels(tmp_path / "labels", f"{server.base}/theirs", policy=FAST, progress=False)


def test_the_folder_is_found_through_the_variable_or_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HPASC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_fourth_place_labels() is None
    cached = default_folder()
    assert cached.parent == tmp_path / "cache" / "labels"
    cached.mkdir(parents=True)
    assert find_fourth_place_labels() == cached
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "theirs"))
    assert find_fourth_place_labels() == tmp_path / "theirs"  # named, even before it exists


def test_their_real_folder_fetches_byte_for_byte(fourth_place_labels: Path, tmp_path: Path) -> None:
    """The pinned counts are those of their real files, and a fetch of them changes no byte."""
    assert count_mismatches(fourth_place_labels) == []
    real = {name: (fourth_place_labels / name).read_bytes() for name in PINNED_ENTRIES}
    for server in serve(routes(real)):
        target = fetch_fourth_place_labels(tmp_path / "labels", f"{server.base}/theirs", policy=FAST, progress=False)
    assert all(filecmp.cmp(target / name, fourth_place_labels / name, shallow=False) for name in PINNED_ENTRIES)
