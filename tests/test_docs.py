"""The documentation: README.md is short and its links resolve, and docs/ builds into a site with
``mkdocs build --strict`` (a broken link, an unlisted page or a missing one fails it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

README_LINES = 150


def build_site(root: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(root / "mkdocs.yml"), "-d", str(out)], capture_output=True, text=True, timeout=300)


def local_links(page: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)#\s]+)[^)]*\)", page.read_text())
    return [t for t in targets if not re.match(r"[a-z]+://", t)]


def test_the_site_builds_strictly_with_every_page(tmp_path: Path) -> None:
    result = build_site(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    pages = sorted(p.stem for p in (REPO / "docs").glob("*.md"))
    built = sorted(p.parent.name if p.parent != tmp_path / "site" else "index"
                   for p in (tmp_path / "site").rglob("index.html") if "search" not in p.parts)
    assert built == pages


def test_a_broken_link_or_an_unlisted_page_fails_the_build(tmp_path: Path) -> None:
    for change in ("link", "page"):
        root = tmp_path / change
        shutil.copytree(REPO / "docs", root / "docs")
        shutil.copy(REPO / "mkdocs.yml", root)
        if change == "link":
            with (root / "docs" / "infer.md").open("a") as page:
                page.write("\nSee [the cells](no-such-page.md).\n")
        else:
            (root / "docs" / "orphan.md").write_text("# Not in the navigation\n")
        result = build_site(root, root / "site")
        assert result.returncode != 0
        assert ("no-such-page.md" if change == "link" else "orphan.md") in result.stderr


def test_the_readme_is_short_and_its_links_resolve() -> None:
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= README_LINES
    assert readme.read_text().startswith("# hpasc")
    for page in (readme, REPO / "kaggle" / "README.md"):
        links = local_links(page)
        assert links, page
        assert [t for t in links if not (page.parent / t).exists()] == [], page
    linked = {Path(t).name for t in local_links(readme)}
    assert {"index.md", "getting-started.md", "troubleshooting.md", "kaggle.md"} <= linked


def test_the_readme_starts_with_the_two_commands() -> None:
    commands = re.findall(r"^\./scripts/(\w+)\.sh", (REPO / "README.md").read_text(), flags=re.M)
    assert commands[:2] == ["demo", "test"]
    assert "./scripts/test.sh" in (REPO / ".ci" / "run").read_text()
