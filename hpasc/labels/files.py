"""The label file: ``{class}.txt`` of lines ``{cell_id} {value}`` (SPEC), its one line reader and
its one line writer. What a value means (a manual score 0..5, or a soft value with a decimal
point) is for the reader's caller: :mod:`hpasc.labels.folders` maps both to soft labels, the
relabeling tool accepts scores only, :mod:`hpasc.labels.fourth_place` applies the 4th place's maps."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path

from hpasc.core.errors import InputError

SCORES = range(0, 6)  # SPEC: integer scores 0..5 (0 and 1 both mean 'not this class')


def read_label_lines(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """``(cell_id, value text, "path:line")`` for each non-blank line of a label file, in order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        # The value is the last field: a cell id may hold spaces ("well A1 field 2_3").
        fields = line.strip().rsplit(None, 1)
        if not fields:
            continue
        if len(fields) != 2:
            raise InputError(f"{path}:{number}: expected '{{cell_id}} {{value}}', got {line.strip()!r}")
        lines.append((fields[0], fields[1], f"{path}:{number}"))
    return lines


def read_scores(path: str | os.PathLike, allowed: Collection[int] = SCORES) -> list[tuple[str, int]]:
    """``(cell_id, score)`` for each line of a file of integer scores, in order; InputError naming
    the line of a score outside ``allowed``."""
    entries = []
    for cell_id, token, where in read_label_lines(path):
        # ASCII digits only: '²' is a digit to str.isdigit, not to int.
        if not (token.isascii() and token.isdigit()) or int(token) not in allowed:
            raise InputError(f"{where}: score {token!r} is not one of {', '.join(map(str, allowed))}")
        entries.append((cell_id, int(token)))
    return entries


def label_lines(entries: Iterable[tuple[str, str]]) -> str:
    """The text of label-file lines for ``(cell_id, value text)`` pairs; ValueError for a cell id
    that would not read back (empty, white space at either end, or any white space but a plain
    space inside)."""
    lines = []
    for cell_id, value in entries:
        if not cell_id or cell_id != cell_id.strip() or any(c.isspace() and c != " " for c in cell_id):
            raise ValueError(f"cell id {cell_id!r} is empty, or has white space at an end or other than spaces")
        lines.append(f"{cell_id} {value}\n")
    return "".join(lines)
