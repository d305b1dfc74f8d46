"""Item 5 of the fault matrix: a file name made from a hostile image id stays a relative file
link in the HTML the tools write (the Grad-CAM index and the explore report share the rule)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from hpasc.core.weblinks import href
from hpasc.tools.gradcam import Heatmap, index_html


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value or "" for name, value in attrs if name in ("href", "src")]


@pytest.mark.parametrize("name", ["javascript:alert(1)_0_c1.png", "a?b#c.png", 'x"><script>.png',
                                  "data:text/html,<b>x</b>.png"])
def test_hostile_names_stay_relative_file_links(name: str) -> None:
    parser = _Links()
    parser.feed(index_html([Heatmap("cell", 1, 0.5, name)], "t"))
    assert len(parser.links) == 2, parser.links
    assert not any(c in link for link in parser.links for c in ":?#\"<>"), parser.links


def test_subfolders_keep_their_slashes_and_absolute_paths_are_refused() -> None:
    assert href("figures/a b.png") == "figures/a%20b.png"
    with pytest.raises(ValueError):
        href("/etc/passwd")
