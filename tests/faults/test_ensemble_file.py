"""Item 12 of the fault matrix: ensemble files with a non-finite or non-numeric weight, a
post-processing setting of the wrong type, or an unknown key (a typo) are one-line errors before
any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpasc.core.errors import InputError
from hpasc.stages.infer.ensemble_file import read_ensemble


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a.pt").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("content, fragment", [
    ("groups: [{weight: .inf, members: [a.pt]}]", "finite"),
    ("groups: [{weight: .nan, members: [a.pt]}]", "finite"),
    ("groups: [{members: [{checkpoint: a.pt, weight: -.inf}]}]", "finite"),
    ("groups: [{members: [a.pt]}]\npostprocessing: {cell_weight: lots}", "cell_weight"),
    ("groups: [{members: [a.pt]}]\npostprocessing: {image_weight: .inf}", "image_weight"),
    ("groups: [{members: [a.pt]}]\npostprocessing: {border_factor: 1}", "border_factor"),
    ("groups: [{wieght: 0.5, members: [a.pt]}]", "'wieght' (did you mean 'weight'?)"),
    ("groups: [{members: [{checkpoint: a.pt, wieght: 2}]}]", "'wieght' (did you mean 'weight'?)"),
    ("groups: [{members: [a.pt]}]\npostprocessing: {cell_wieght: 0.5}", "'cell_wieght' (did you mean 'cell_weight'?)"),
    ("grups: [{members: [a.pt]}]", "'grups' (did you mean 'groups'?)"),
    ("groups: [{weight: 1.0e+308, members: [a.pt]}, {weight: 1.0e+308, members: [a.pt]}]", "more than a float holds"),
    ("groups: [{members: [{checkpoint: a.pt, weight: 1.0e+308}, {checkpoint: a.pt, weight: 1.0e+308}]}]",
     "more than a float holds"),
])
def test_bad_values_and_typos_are_refused(folder: Path, content: str, fragment: str) -> None:
    (folder / "e.yaml").write_text(content)
    with pytest.raises(InputError) as caught:
        read_ensemble(folder / "e.yaml")
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_good_file_still_reads(folder: Path) -> None:
    (folder / "e.yaml").write_text("groups: [{weight: 2, members: [{checkpoint: a.pt, weight: 1}]}]\n"
                                   "postprocessing: {cell_weight: 1, image_weight: 0.5, border_factor: false}")
    ensemble = read_ensemble(folder / "e.yaml")
    assert ensemble.members[0].weight == 1.0
    assert (ensemble.postprocessing.cell_weight, ensemble.postprocessing.border_factor) == (1.0, False)
