"""A folder of input images: each image is either four channel files (``{ID}_red.png``, … the
Kaggle layout) or one multi-channel TIFF / OME-TIFF (``{ID}.tif``, ``{ID}.ome.tiff``) whose channel
order ``--channels`` or its OME metadata gives. Every stage that reads images scans them here.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpasc.core import atomic
from hpasc.core.errors import InputError
from hpasc.core.images import CHANNELS, channel_file_pattern, extension_rank, extensions, read_image_size, stack_channels
from hpasc.core.multichannel import ChannelOrder, format_channel_order, read_stack, read_stack_header

log = logging.getLogger(__name__)
_STACK_FILE = re.compile(r"^(?P<id>.+?)(?:\.ome)?\.tiff?$", re.IGNORECASE)


@dataclass(frozen=True)
class ImageSource:
    """Where one image's pixels are: four channel files in channel order (R, G, B, Y), or one
    multi-channel file and the channel of each of its planes. Small and picklable: workers get
    this, not the pixels."""

    image_id: str
    files: tuple[Path, ...]
    order: ChannelOrder | None = None

    def read(self) -> np.ndarray:
        """The image as uint16 H×W×4 (R, G, B, Y)."""
        if self.order is None:
            return stack_channels(self.image_id, list(self.files))
        return read_stack(self.files[0], self.order)

    def size(self) -> tuple[int, int]:
        """(width, height), from a file header."""
        return read_image_size(self.files[0])

    def exists(self) -> bool:
        return all(path.is_file() for path in self.files)


@dataclass(frozen=True)
class ImageFolder:
    """The usable images of a folder, and why the others cannot be read, by image ID."""

    root: Path
    sources: dict[str, ImageSource]
    unusable: dict[str, str]

    @property
    def ids(self) -> list[str]:
        return sorted(self.sources)

    def failures(self, select: Callable[[list[str]], list[str]] = list) -> dict[str, str]:
        """Unusable image → why, for the IDs ``select`` picks from the sorted unusable IDs (e.g. a
        shard's part)."""
        return {i: self.unusable[i] for i in select(sorted(self.unusable))}

    def source(self, image_id: str) -> ImageSource:
        if image_id not in self.sources:
            raise InputError(f"{image_id}: {self.unusable.get(image_id, 'no such image')} in {self.root}")
        return self.sources[image_id]

    def read(self, image_id: str) -> np.ndarray:
        """One image as uint16 H×W×4 (R, G, B, Y)."""
        return self.source(image_id).read()


def scan_images(folder: str | os.PathLike, channels: ChannelOrder | None = None) -> ImageFolder:
    """Find the images in ``folder``, logging what it found; ``channels`` is the plane order of
    multi-channel files (None: their OME channel names). Unusable images are logged by name and
    kept aside; a folder without a usable image is an :class:`InputError`."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a folder")
    channel_files, stacks = _list_files(root)
    if not channel_files and not stacks:
        raise InputError(f"no images in {root}: expected files named {{ID}}_{{red,green,blue,yellow}} "
                         f"with an extension of {', '.join(extensions())}, or one multi-channel {{ID}}.tif "
                         "/ {ID}.ome.tif per image")
    sources: dict[str, ImageSource] = {}
    unusable: dict[str, str] = {}
    for image_id, files in channel_files.items():
        if len(files) == len(CHANNELS):
            sources[image_id] = ImageSource(image_id, tuple(files[c] for c in CHANNELS))
        elif image_id not in stacks:
            unusable[image_id] = f"missing channel(s) {', '.join(c for c in CHANNELS if c not in files)}"
    orders: Counter[str] = Counter()
    for image_id, path in stacks.items():
        if image_id in sources:
            log.warning("%s: has both four channel files and %s; reading the channel files", image_id, path.name)
            continue
        try:
            order = read_stack_header(path).channel_order(path, channels)
        except InputError as exc:
            unusable[image_id] = str(exc)
            continue
        sources[image_id] = ImageSource(image_id, (path,), order)
        orders[format_channel_order(order)] += 1
    found = ImageFolder(root, sources, unusable)
    _report(found, orders, channels)
    if not sources:
        first = min(unusable)
        raise InputError(f"no usable image in {root} ({len(unusable)} unusable; {first}: {unusable[first]})")
    return found


def _list_files(root: Path) -> tuple[dict[str, dict[str, Path]], dict[str, Path]]:
    """({image ID: {channel: file}} of the channel files, {image ID: file} of the multi-channel
    files). A channel present in several formats keeps the first of :func:`~hpasc.core.images.extensions`."""
    channel_files: dict[str, dict[str, Path]] = {}
    stacks: dict[str, Path] = {}
    channel_file = channel_file_pattern()
    for entry in os.scandir(root):
        if not entry.is_file() or atomic.is_temporary(entry.name):
            continue
        match = channel_file.match(entry.name)
        if match is not None:
            files = channel_files.setdefault(match["id"], {})
            channel, current = match["channel"].lower(), files.get(match["channel"].lower())
            if current is None or extension_rank(entry.name) < extension_rank(current.name):
                files[channel] = Path(entry.path)
        elif (stack := _STACK_FILE.match(entry.name)) is not None:
            if stack["id"] in stacks:
                raise InputError(f"{root}: two multi-channel files for image {stack['id']} "
                                 f"({stacks[stack['id']].name}, {entry.name})")
            stacks[stack["id"]] = Path(entry.path)
    return channel_files, stacks


def _report(found: ImageFolder, orders: Counter[str], channels: ChannelOrder | None) -> None:
    """Log what the scan found: how many images of each layout, and the planes' channel order."""
    stacked = sum(orders.values())
    parts = [f"{len(found.sources) - stacked} as four channel files"] if len(found.sources) > stacked else []
    if stacked:
        how = "--channels" if channels is not None else "OME channel names"
        parts.append(f"{stacked} as multi-channel TIFF (planes {'; '.join(orders)} from {how})")
    if found.unusable:
        parts.append(f"{len(found.unusable)} unusable")
    log.info("%s: %d images, %s", found.root, len(found.sources), ", ".join(parts))
    for image_id in sorted(found.unusable):
        log.warning("%s: unusable image, %s", image_id, found.unusable[image_id])
    if channels is not None and not stacked:
        log.warning("--channels %s has no effect: %s has no multi-channel image", format_channel_order(channels),
                    found.root)
