"""The 4th place's published labels read and applied as their code did: each rule on a hand-made
dataset whose cell ids are lines of their real files. Their folder is not shipped: the tests that read
it take the ``fourth_place_labels`` fixture (skipped, naming ``hpasc-labels fetch``, without it)."""

from __future__ import annotations

import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from hpasc.core.classes import label_matrix
from hpasc.core.errors import InputError
from hpasc.labels.fourth_place import apply_their_rules, is_fourth_place_folder, listed_images, read_fourth_place
from hpasc.labels.pickles import read_id_set
from hpasc.labels.summary import inspect_labels
from tests.conftest import assert_one_line_error, run_script

# Each cell: (cell id, its image's labels); the comment says which line of their files names it.
CELLS = {
    "r1_dup": ("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0_0", [1]),      # relabel/1.txt: 3, later 4
    "r1_unscored": ("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0_999", [1]),  # an image with class 1, no line
    "neg0": ("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0_5", [0, 1]),      # auto-relabel/0.p, relabel/1, validation/1
    "e5": ("2f9afe9a-bbc4-11e8-b2bc-ac1f6b6435d0_2", [0, 6, 11]),    # relabel/11.txt: 5; validation/8.txt
    "e2": ("e3f019ea-bbae-11e8-b2ba-ac1f6b6435d0_29", [0, 11]),      # relabel/11.txt: 2; validation/2.txt
    "e3": ("c58e22ba-bbc9-11e8-b2bc-ac1f6b6435d0_9", [2]),           # relabel/11.txt: 3 (no 11); validation/5
    "pos6": ("004bf4c6-bbc6-11e8-b2bc-ac1f6b6435d0_2", [0]),         # auto-positive-relabel/6.p
    "pos6_late_neg": ("004bf4c6-bbc6-11e8-b2bc-ac1f6b6435d0_4", [0]),  # that and auto-relabel2/6.p
    "img6_listed": ("1001_B8_1_0", [6]),        # relabel/6.txt: 1001_B8_1 1
    "img6_sibling": ("1001_B8_2_0", [6]),       # no line; same antibody as 1001_B8_1 in the table below
    "img6_unlisted": ("1001_G1_2_0", [6]),      # relabel/6.txt: 1, later 3
    "img6_kaggle": ("00b9bdcc-bbca-11e8-b2bc-ac1f6b6435d0_0", [6]),  # relabel/6.txt: 1, a Kaggle image
    "r8": ("0042017c-bba4-11e8-b2b9-ac1f6b6435d0_2", [8]),           # relabel/8.txt: 3
    "v8_half": ("7a58926a-bbad-11e8-b2ba-ac1f6b6435d0_37", [8, 16]),  # validation/8.txt: 2
    "v1": ("b1226d78-bbaa-11e8-b2ba-ac1f6b6435d0_17", [1, 2, 3]),    # validation/1.txt: 3, validation/2.txt: 3
    "plain": ("not-in-their-files_0", [3, 4]),
}
PUBLIC_TABLE = """Image,Label,Cellline,in_trainset
https://images.proteinatlas.org/A1/1001_B8_1,Cytosol,U2OS,False
https://images.proteinatlas.org/A1/1001_B8_2,Cytosol,U2OS,False
https://images.proteinatlas.org/A2/1001_G1_2,Cytosol,U2OS,False
"""


@pytest.fixture(scope="module")
def theirs(fourth_place_labels: Path):
    return read_fourth_place(fourth_place_labels)


def run_recipe(theirs, antibody_of=None):
    names = list(CELLS)
    cell_ids = [CELLS[n][0] for n in names]
    image_ids = [c.rsplit("_", 1)[0] for c in cell_ids]
    result = apply_their_rules(theirs, cell_ids, image_ids, label_matrix([CELLS[n][1] for n in names]), antibody_of)
    targets = result.targets()
    return {n: targets[i] for i, n in enumerate(names)}, {n: set(np.flatnonzero(result.labels[i]))
                                                        for i, n in enumerate(names)}, result


def test_their_folder_is_recognised_and_read(theirs, fourth_place_labels: Path) -> None:
    assert is_fourth_place_folder(fourth_place_labels) and not is_fourth_place_folder(fourth_place_labels / "relabel")
    assert sorted(theirs.relabel) == [1, 6, 8, 9, 11, 12, 15]
    assert len(theirs.validation) == 13
    assert theirs.entries() == 544928  # 195,827 lines + 349,101 pickled ids
    assert sorted(theirs.late_negatives) == [1, 6, 12] and sorted(theirs.positives) == [6]


def test_manual_scores_maps_and_the_069_rule(theirs) -> None:
    targets, labels, result = run_recipe(theirs)
    assert targets["r1_dup"][1] == pytest.approx(0.85)  # class 1's map; the later line (4) wins
    assert targets["r1_unscored"][1] == pytest.approx(0.69)
    assert targets["r8"][8] == 1.0  # class 8 scores 1..3
    assert not result.relabelled[list(CELLS).index("r1_unscored"), 1]  # 0.69 is a rule, not a person's score
    assert targets["plain"][[3, 4]].tolist() == [1.0, 1.0] and targets["plain"].sum() == 2.0


def test_pseudo_label_sets(theirs) -> None:
    targets, labels, _ = run_recipe(theirs)
    assert targets["neg0"][0] == pytest.approx(0.01)
    assert targets["pos6"][6] == pytest.approx(0.99) and 6 in labels["pos6"]  # the positive gains class 6
    assert targets["pos6_late_neg"][6] == pytest.approx(0.01)  # auto-relabel2 comes after the positives


def test_class_eleven(theirs) -> None:
    targets, labels, _ = run_recipe(theirs)
    assert targets["e5"][11] == 1.0 and labels["e5"] == {11}
    assert targets["e5"][0] == 0.0  # label 0 dropped: 11 alone
    assert targets["e2"][11] == pytest.approx(0.05) and labels["e2"] == {0, 11}  # below 0.2: labels kept
    assert targets["e3"][11] == pytest.approx(0.2) and labels["e3"] == {11}  # gains 11 alone, as their code


def test_class_six_per_antibody(theirs, tmp_path: Path) -> None:
    from hpasc.labels.public_table import antibody_of_images

    (tmp_path / "public.csv").write_text(PUBLIC_TABLE)
    targets, _, result = run_recipe(theirs, antibody_of_images(tmp_path / "public.csv"))
    assert targets["img6_listed"][6] == pytest.approx(0.51)
    assert targets["img6_sibling"][6] == pytest.approx(0.51)  # listed through its antibody
    assert targets["img6_unlisted"][6] == 1.0  # its last line is 3
    assert targets["img6_kaggle"][6] == 1.0  # a Kaggle image is in no antibody: unlisted, as in their code
    assert result.resolved["relabel/6.txt (images)"] == (2, 2)
    per_image, _, _ = run_recipe(theirs)  # without the table, each listed image stands for itself
    assert per_image["img6_sibling"][6] == 1.0 and per_image["img6_kaggle"][6] == pytest.approx(0.51)


def test_validation_set_and_metric_classes(theirs) -> None:
    targets, _, result = run_recipe(theirs)
    names = list(CELLS)
    # their validation files name cells their relabel files score too: those are validation cells
    validation = ["neg0", "e5", "e2", "e3", "v8_half", "v1"]
    assert [names[i] for i in result.validation_rows] == validation
    v8, v1 = result.metric[validation.index("v8_half")], result.metric[validation.index("v1")]
    assert targets["v8_half"][8] == 0.5 and not v8[8]  # class 8 at 0.5 is not measured
    assert not v8[16] and v8[0] and v8[11] and not v8[18]  # unscored own label: no; absent 0..17: yes
    assert targets["v1"][1] == pytest.approx(0.8) and v1[1] and v1[2]  # validation map of classes 1, 2
    assert targets["v1"][3] == 1.0 and not v1[3]  # its image's class 3, unscored: not measured


def test_counts_of_resolved_ids_are_exact(theirs) -> None:
    _, _, result = run_recipe(theirs)
    assert result.resolved["relabel/1.txt"][0] == 2  # r1_dup and neg0 (r1_unscored has no line)
    assert result.resolved["relabel/1.txt"][1] == 26876  # distinct ids of 39,989 lines
    assert result.resolved["relabel/11.txt"][0] == 3
    assert result.resolved["auto-positive-relabel/6.p"][0] == 2
    assert result.resolved["validation/8.txt"][0] == 2  # e5 and v8_half


def test_their_pickles_load(fourth_place_labels: Path) -> None:
    ids = read_id_set(fourth_place_labels / "auto-relabel" / "10.p")
    assert len(ids) == 3556 and all(isinstance(i, str) for i in ids)


def test_a_global_in_a_pickle_is_refused(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.p"
    hostile.write_bytes(pickle.dumps({"a_0", Path("x")}))  # a set holding any global object
    with pytest.raises(InputError, match="refuses the global"):
        read_id_set(hostile)
    evil = tmp_path / "evil.p"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "ran").encode() + b"'\ntR.")
    with pytest.raises(InputError, match="refuses the global os.system"):
        read_id_set(evil)
    assert not (tmp_path / "ran").exists()
    assert "GLOBAL" in {op.name for op, _, _ in pickletools.genops(evil.read_bytes())}
    (tmp_path / "dict.p").write_bytes(pickle.dumps({"a_0": 1}))
    with pytest.raises(InputError, match="holds a dict"):
        read_id_set(tmp_path / "dict.p")


def test_a_score_outside_the_class_map_is_refused(tmp_path: Path) -> None:
    (tmp_path / "relabel").mkdir()
    (tmp_path / "relabel" / "8.txt").write_text("a_0 3\na_1 4\n")  # class 8 scores 1..3
    with pytest.raises(InputError, match=r"8.txt:2: score '4' is not one of 1, 2, 3"):
        read_fourth_place(tmp_path)


def test_listed_images_follow_the_last_line() -> None:
    assert listed_images([("a", 1), ("b", 3), ("a", 3), ("c", 0), ("b", 2)], None) == {"b", "c"}


def test_inspect_command_on_their_folder(fourth_place_labels: Path) -> None:
    result = run_script("-m", "hpasc.commands.labels", "inspect", fourth_place_labels)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "labels: 544928 entries, 17 classes"
    assert any(line.startswith("class 11  relabel/11.txt") and "9480 entries" in line and "1: 359" in line
               for line in lines)


def test_inspect_a_spec_folder_with_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "3.txt").write_text("a_0 5\na_0 0\nb_1 4\nzz_0 2\n")
    lines = inspect_labels(tmp_path / "labels")
    assert lines[-1] == "labels: 4 entries, 1 classes"
    assert "3 cells (0: 1, 0.2: 1, 0.9: 1)" in lines[1]


def test_inspect_says_a_file_is_empty(tmp_path: Path) -> None:
    """An empty label file is empty, not a file of image ids (issue 38, item 8)."""
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "3.txt").write_text("")
    (tmp_path / "labels" / "5.txt").write_text("a_0 5\n")
    lines = inspect_labels(tmp_path / "labels")
    empty = next(line for line in lines if line.startswith("class  3"))
    assert empty.endswith("0 entries  (empty)") and "image ids" not in empty


def test_inspect_errors_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_script("-m", "hpasc.commands.labels", "inspect", tmp_path / "missing"), "does not exist")
    (tmp_path / "relabel").mkdir()
    (tmp_path / "relabel" / "1.txt").write_text("a_0 7\n")
    assert_one_line_error(run_script("-m", "hpasc.commands.labels", "inspect", tmp_path), "1.txt:1", "score '7'")
