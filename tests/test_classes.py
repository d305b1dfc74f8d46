"""Class names and the train.csv label format."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpasc.core.classes import CLASS_NAMES, NUM_CLASSES, format_labels, parse_labels, read_label_table
from hpasc.core.errors import InputError


def test_classes() -> None:
    assert NUM_CLASSES == 19
    assert CLASS_NAMES[11] == "Mitotic spindle" and CLASS_NAMES[18] == "Negative"


@pytest.mark.parametrize("text, labels", [("8|5|0", [8, 5, 0]), ("18", [18]), ("", []),
                                          (math.nan, []), (None, []), (" 3 | 4 ", [3, 4])])
def test_parse_labels(text, labels) -> None:
    assert parse_labels(text) == labels


@pytest.mark.parametrize("text", ["19", "-1", "a", "1|x"])
def test_parse_labels_rejects(text) -> None:
    with pytest.raises(ValueError):
        parse_labels(text)


def test_format_keeps_order() -> None:
    assert format_labels([8, 5, 0]) == "8|5|0" and parse_labels(format_labels([16, 1])) == [16, 1]


def test_real_train_csv(hpa_real: Path) -> None:
    labels = read_label_table(hpa_real / "train.csv")
    assert len(labels) == 21806
    assert labels["5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0"] == [8, 5, 0]
    assert all(labels.values())
    seen = {c for classes in labels.values() for c in classes}
    assert seen == set(range(NUM_CLASSES))


def test_bad_label_tables(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_label_table(tmp_path / "absent.csv")
    (tmp_path / "cols.csv").write_text("Id,Labels\na,1\n")
    with pytest.raises(InputError, match="missing column"):
        read_label_table(tmp_path / "cols.csv")
    (tmp_path / "bad.csv").write_text("ID,Label\na,1|2\nb,1|25\n")
    with pytest.raises(InputError, match=r"bad.csv line 3: bad label '1\|25'"):
        read_label_table(tmp_path / "bad.csv")
