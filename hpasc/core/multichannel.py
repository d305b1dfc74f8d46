"""One multi-channel TIFF or OME-TIFF per image: which of its planes is red, green, blue and yellow.

The order comes from the user (``--channels R,G,B,Y``: the file's planes in file order, ``-`` for a
plane to leave out) or else from the OME metadata's channel names. A file whose order neither
gives cannot be read: guessing would silently swap the nucleus and the protein channel.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from hpasc.core.errors import InputError
from hpasc.core.images import CHANNELS, LIMITS, Limits, check_pixels, to_uint16

ChannelOrder = tuple[str | None, ...]
"""The channel (``red``…``yellow``) of each plane of a file, in file order; None: a plane left out."""

_LETTERS = {"r": "red", "g": "green", "b": "blue", "y": "yellow", "-": None}
# Names an OME file may give its channels: HPA's colours, what each colour stains, common dyes.
_OME_NAMES = {
    "red": ("red", "r", "microtubules", "microtubule", "tubulin", "alpha-tubulin"),
    "green": ("green", "g", "protein", "antibody", "target", "protein of interest"),
    "blue": ("blue", "b", "nucleus", "nuclei", "dapi", "hoechst"),
    "yellow": ("yellow", "y", "er", "endoplasmic reticulum", "calreticulin"),
}
_NAME_TO_CHANNEL = {name: channel for channel, names in _OME_NAMES.items() for name in names}
_PLANE_AXES = "CSQI"  # tifffile's axis letters for channels, samples, unknown and generic planes


def parse_channel_order(text: str) -> ChannelOrder:
    """``R,G,B,Y`` (letters or colour names, any case; ``-`` for a plane to leave out) → the
    channel of each plane; each of R, G, B, Y must appear exactly once."""
    order: list[str | None] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if part in _LETTERS:
            order.append(_LETTERS[part])
        elif part in CHANNELS:
            order.append(part)
        else:
            raise InputError(f"channel order {text!r}: {part!r} is not one of R, G, B, Y (or - to leave a plane out)")
    named = [c for c in order if c is not None]
    for channel in CHANNELS:
        if named.count(channel) != 1:
            times = "is missing" if channel not in named else f"appears {named.count(channel)} times"
            raise InputError(f"channel order {text!r}: {channel} {times}; each of R, G, B, Y must appear once")
    return tuple(order)


def format_channel_order(order: ChannelOrder) -> str:
    return ",".join("-" if c is None else c[0].upper() for c in order)


@dataclass(frozen=True)
class StackHeader:
    """What a multi-channel file's header says: its planes' count and size, and the OME names."""

    planes: int
    height: int
    width: int
    names: tuple[str, ...] | None

    def channel_order(self, path: Path, given: ChannelOrder | None) -> ChannelOrder:
        """``given`` (``--channels``) when set, else the order the OME channel names say."""
        if given is not None:
            if len(given) != self.planes:
                raise InputError(f"{path}: {self.planes} planes, but --channels names {len(given)}")
            return given
        if self.names is None:
            raise InputError(f"{path}: {self.planes} planes and no OME channel names; say which plane "
                             "is which with --channels (e.g. R,G,B,Y)")
        order = tuple(_NAME_TO_CHANNEL.get(n.strip().lower()) for n in self.names)
        if sorted(filter(None, order)) != sorted(CHANNELS):
            raise InputError(f"{path}: the OME channel names ({', '.join(self.names)}) do not say which "
                             "plane is R, G, B and Y; give --channels")
        return order


def read_stack_header(path: str | os.PathLike) -> StackHeader:
    """The header of a multi-channel TIFF: planes, size and (OME-TIFF) channel names."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            letters, shape = _layout(path, tiff.series[0])
            names = _ome_channel_names(tiff.ome_metadata) if tiff.is_ome else None
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{path}: corrupt or unreadable TIFF ({type(exc).__name__}: {exc})") from None
    planes = shape[_plane_axis(letters)] if len(letters) == 3 else 1
    if planes < len(CHANNELS):
        raise InputError(f"{path}: {planes} plane(s); an image needs {len(CHANNELS)} (R, G, B, Y)")
    if names is not None and len(names) != planes:
        names = None  # OME metadata that does not describe these planes says nothing about them
    return StackHeader(planes, shape[letters.index("Y")], shape[letters.index("X")], names)


def read_stack(path: str | os.PathLike, order: ChannelOrder, limits: Limits = LIMITS) -> np.ndarray:
    """Read a multi-channel TIFF as uint16 H×W×4 (R, G, B, Y), its planes picked by ``order``."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            letters, shape = _layout(path, series)
            check_pixels(path, shape[letters.index("X")], shape[letters.index("Y")], limits)
            if series.size * series.dtype.itemsize > limits.max_inflated_bytes:
                raise InputError(f"{path}: more than {limits.max_inflated_bytes >> 20} MiB of pixels "
                                 "(HPASC_MAX_INFLATED_MB raises the limit)")
            array = series.asarray().reshape(shape)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: corrupt or truncated TIFF ({type(exc).__name__}: {exc})") from None
    planes = np.moveaxis(array, _plane_axis(letters), 0) if len(letters) == 3 else array[None]
    if len(planes) != len(order):
        raise InputError(f"{path}: {len(planes)} planes, but the channel order names {len(order)}")
    return to_uint16(np.stack([planes[order.index(c)] for c in CHANNELS], axis=-1), path)


def _layout(path: Path, series: tifffile.TiffPageSeries) -> tuple[str, tuple[int, ...]]:
    """The series' axes without those of length 1 (Y and X kept), and their lengths; refused
    unless that is Y, X and at most one axis of planes."""
    kept = [(a, n) for a, n in zip(series.axes, series.shape) if n != 1 or a in "YX"]
    letters = "".join(a for a, _ in kept)
    others = letters.replace("Y", "").replace("X", "")
    if "YX" not in letters.replace(others, "") or len(letters) != len(others) + 2:
        raise InputError(f"{path}: no Y and X axes in the TIFF's layout {series.axes} {series.shape}")
    if len(others) > 1 or others not in _PLANE_AXES:
        raise InputError(f"{path}: layout {series.axes} {series.shape} has more than channel planes "
                         "(z-slices or time points?); save one 2-D plane per channel, e.g. a maximum projection")
    return letters, tuple(n for _, n in kept)


def _plane_axis(letters: str) -> int:
    return next(i for i, a in enumerate(letters) if a not in "YX")


def _ome_channel_names(xml: str | None) -> tuple[str, ...] | None:
    """The Name of each Channel of the first OME Image, or None when any is unnamed."""
    if not xml:
        return None
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    image = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Image"), None)
    if image is None:
        return None
    names = tuple(e.get("Name") for e in image.iter() if e.tag.rsplit("}", 1)[-1] == "Channel")
    return names if names and all(names) else None
