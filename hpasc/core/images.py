"""Reading 4-channel HPA images in every format the SPEC allows, and writing images atomically.

In memory an image is uint16 H×W×4 in channel order R, G, B, Y; 8-bit data is scaled ×257 so that
8- and 16-bit sources share one value range.

Channel files' formats are a registry of :class:`ChannelFormat` entries (PNG, TIFF and gzipped
TIFF, JPEG here; :func:`register_format` adds one), which the file names they match, their
decoding, their header's size and their writing all come from.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np
import tifffile
from PIL import Image

from hpasc.core import atomic
from hpasc.core.errors import InputError

# A damaged file is reported by the stage's own line; OpenCV's warnings would only repeat it.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
# The RGB planes in which HPA's website tints each channel.
TINTS: dict[str, tuple[int, ...]] = {"red": (0,), "green": (1,), "blue": (2,), "yellow": (0, 1)}
Region = tuple[slice, slice]  # one label's box in a label image, as scipy.ndimage.find_objects gives it


@dataclass(frozen=True)
class Limits:
    """What a channel file may decode to: a guard against decompression bombs. Real HPA images
    are at most 3072² (16-bit, 18 MiB); the defaults leave room for larger microscopes' images."""

    max_pixels: int = int(os.environ.get("HPASC_MAX_PIXELS", 8192 * 8192))
    max_inflated_bytes: int = int(os.environ.get("HPASC_MAX_INFLATED_MB", 512)) << 20


LIMITS = Limits()
_CHUNK = 1 << 20  # what one read or one inflate step holds in memory


@dataclass(frozen=True)
class ChannelFormat:
    """One file format of channel files: its ``extensions`` (lower case, e.g. ``.tif.gz``); how a
    file's content is decoded (``decode(path, source, limits)``: an 8- or 16-bit array, grey or
    colour; InputError for a damaged file or one past ``limits``); its (width, height) from the
    file's header (``size(path)``); and a plane's file content (``encode(path, plane)``; None: the
    format is read only)."""

    extensions: tuple[str, ...]
    decode: Callable[[Path, IO[bytes], Limits], np.ndarray]
    size: Callable[[Path], tuple[int, int]]
    encode: Callable[[Path, np.ndarray], bytes] | None = None


_FORMATS: list[ChannelFormat] = []
"""In preference order: when one channel exists in several formats, the first listed wins (lossless
before lossy)."""


def register_format(channel_format: ChannelFormat) -> ChannelFormat:
    """Make a channel file format known to every reader of this process (last in preference)."""
    _FORMATS.append(channel_format)
    return channel_format


def extensions() -> tuple[str, ...]:
    """Every known channel file extension, in preference order."""
    return tuple(ext for channel_format in _FORMATS for ext in channel_format.extensions)


def format_of(name: str) -> ChannelFormat | None:
    """The format of a file name: the one whose extension it ends with (the longest, so ``.tif.gz``
    is TIFF's gzipped form); None for no known format."""
    lower = name.lower()
    matches = [(len(ext), f) for f in _FORMATS for ext in f.extensions if lower.endswith(ext)]
    return max(matches, key=lambda match: match[0])[1] if matches else None


def channel_file_pattern() -> re.Pattern[str]:
    """A channel file's name, ``{ID}_{channel}{extension}``, for the channels and formats known."""
    return _pattern(CHANNELS, extensions())


@functools.cache
def _pattern(channels: tuple[str, ...], known: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(rf"^(?P<id>.+)_(?P<channel>{'|'.join(channels)})(?P<ext>{'|'.join(map(re.escape, known))})$",
                      re.IGNORECASE)


def check_pixels(path: Path, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise InputError(f"{path}: {width}x{height} pixels exceeds the limit of {limits.max_pixels} "
                         "(HPASC_MAX_PIXELS raises it)")


def stack_channels(image_id: str, paths: list[Path]) -> np.ndarray:
    """Read the four channel files and stack them, checking that their sizes agree."""
    planes = [_read_grey(p) for p in paths]
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        sizes = ", ".join(f"{c} {p.shape[1]}x{p.shape[0]}" for c, p in zip(CHANNELS, planes))
        raise InputError(f"{image_id}: channels differ in size ({sizes})")
    if {p.dtype for p in planes} in ({np.dtype(np.uint8)}, {np.dtype(np.uint16)}):
        return to_uint16(cv2.merge(planes))  # interleaved by OpenCV, then scaled in one pass: 4x faster
    return np.stack([to_uint16(plane, path) for plane, path in zip(planes, paths)], axis=-1)


def read_channel(path: str | os.PathLike) -> np.ndarray:
    """Read one channel file into a uint16 H×W array (8-bit data ×257).

    Colour files (HPA's tinted JPGs) become the per-pixel maximum over their colour planes: a
    tint puts the signal in one or two planes (yellow = red + green) and zeros elsewhere.
    """
    return to_uint16(_read_grey(path), path)


def _read_grey(path: str | os.PathLike) -> np.ndarray:
    """:func:`read_channel` before the conversion to uint16."""
    with _opened(Path(path)) as handle:
        return _decode_grey(handle, path)


def decode_channel(source: bytes | IO[bytes], name: str | os.PathLike, limits: Limits = LIMITS) -> np.ndarray:
    """Decode one channel file's content (its bytes, or a binary file open at its start); ``name``
    (a file name or path) gives the format.

    A file that would inflate past ``limits`` is an :class:`InputError`, raised before it does."""
    return to_uint16(_decode_grey(source, name, limits), name)


def _decode_grey(source: bytes | IO[bytes], name: str | os.PathLike, limits: Limits = LIMITS) -> np.ndarray:
    """:func:`decode_channel` before the conversion to uint16 (a name of no known format is tried
    as PNG, whose decoder also takes what OpenCV recognises by content)."""
    path = Path(name)
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    return _to_grey(path, (format_of(path.name) or PNG).decode(path, handle, limits))


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of one image file, from its header (the whole file only for ``.gz``,
    which must be decompressed first)."""
    path = Path(path)
    try:
        return (format_of(path.name) or PNG).size(path)
    except InputError:
        raise
    except Exception as exc:  # PIL and tifffile raise many types for damaged files
        raise InputError(f"{path}: cannot read the image size ({type(exc).__name__}: {exc})") from None


_TO_UINT16 = {np.dtype(np.uint16): 1, np.dtype(np.uint8): 257, np.dtype(np.bool_): 65535}


def to_uint16(array: np.ndarray, source: str | os.PathLike = "image") -> np.ndarray:
    """Convert an 8- or 16-bit array to uint16 (8-bit ×257); other pixel types are refused."""
    factor = _TO_UINT16.get(array.dtype)
    if factor is None:
        raise InputError(f"{source}: unsupported bit depth ({array.dtype}; need 8- or 16-bit)")
    return array if factor == 1 else np.multiply(array, factor, dtype=np.uint16)


def encode_png(array: np.ndarray) -> bytes:
    """A 2-D uint8/uint16 greyscale array, or an (H, W, 3) uint8 RGB one, as PNG bytes."""
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        array = array[..., ::-1]  # OpenCV writes BGR
    elif array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"a PNG needs a 2-D uint8/uint16 or (H, W, 3) uint8 array, got {array.dtype} "
                         f"{array.shape}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise OSError(f"PNG encoding failed for a {array.dtype} {array.shape} array")
    return encoded.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a 2-D uint8/uint16 greyscale or an (H, W, 3) uint8 RGB array as a PNG, atomically."""
    atomic.write_bytes(path, encode_png(array))


def write_channel(path: str | os.PathLike, plane: np.ndarray) -> None:
    """Write one channel plane (uint8/uint16 H×W) atomically, in the format its name says.

    ``.png``, ``.tif`` and ``.tif.gz`` keep the bit depth; ``.jpg`` is written the way HPA's website
    shows a channel: 8-bit, tinted by the channel named in the file name (yellow = red + green).
    """
    path = Path(path)
    channel_format = format_of(path.name)
    if channel_format is None or channel_format.encode is None:
        raise ValueError(f"{path.name}: unknown image format")
    atomic.write_bytes(path, channel_format.encode(path, plane))


def write_label_image(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write an instance-label image (0 = background) as a uint16 PNG, atomically."""
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"label values must lie in 0..65535 to be stored in {path}")
    write_png(path, labels.astype(np.uint16, copy=False))


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read an instance-label image written by :func:`write_label_image` (or HPA's uint8 masks)."""
    path = Path(path)
    array = _decode_png(path, _read_bytes(path))
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: not a greyscale 8/16-bit label image ({array.dtype} {array.shape})")
    return array


def _read_bytes(path: Path) -> bytes:
    with _opened(path) as handle:
        return handle.read()


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[IO[bytes]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        yield handle


def extension_rank(name: str) -> int:
    """Where a file's format stands in :func:`extensions` (lossless first): which file to read when
    a channel exists in several formats."""
    lower, known = name.lower(), extensions()
    return next((known.index(e) for e in sorted(known, key=len, reverse=True) if lower.endswith(e)), len(known))


def _unpacked(path: Path, source: IO[bytes], limits: Limits) -> contextlib.AbstractContextManager[IO[bytes]]:
    """``source`` inflated when its name ends in .gz, else itself."""
    return _inflated(path, source, limits) if path.name.lower().endswith(".gz") else contextlib.nullcontext(source)


@contextlib.contextmanager
def _inflated(path: Path, source: IO[bytes], limits: Limits) -> Iterator[IO[bytes]]:
    """The gzip data of ``source`` inflated into a temporary file (several members, as gzip
    allows), a chunk at a time: never more than a chunk in memory, and refused as soon as it
    passes the limit's bytes."""
    with tempfile.TemporaryFile() as out:
        inflater, size, data, between = zlib.decompressobj(wbits=31), 0, b"", True
        try:
            while True:
                if between:  # zero padding may follow a member
                    data = data.lstrip(b"\0")
                if not data:
                    data = source.read(_CHUNK)
                    if not data:
                        break
                    continue
                between = False
                part = inflater.decompress(data, _CHUNK)
                size += len(part)
                if size > limits.max_inflated_bytes:
                    raise InputError(f"{path}: inflates to more than {limits.max_inflated_bytes >> 20} MiB "
                                     "(HPASC_MAX_INFLATED_MB raises the limit)")
                out.write(part)
                if inflater.eof:
                    data, inflater, between = inflater.unused_data, zlib.decompressobj(wbits=31), True
                else:
                    data = inflater.unconsumed_tail
        except zlib.error as exc:
            raise InputError(f"{path}: corrupt or truncated gzip data ({exc})") from None
        if not between:
            raise InputError(f"{path}: corrupt or truncated gzip data (ends before the stream does)")
        out.seek(0)
        yield out


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode_png(path: Path, data: bytes, limits: Limits = LIMITS) -> np.ndarray:
    if not data:  # OpenCV asserts on an empty buffer
        raise InputError(f"{path}: empty file (0 bytes)")
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24:  # IHDR: width, height right after
        check_pixels(path, int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), limits)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError(f"{path}: corrupt or truncated image file (cannot decode)")
    if array.ndim == 3:
        # OpenCV gives BGR(A); the tint rule below only needs the colour planes.
        array = array[..., :3]
    return array


def _decode_tiff(path: Path, source: IO[bytes], limits: Limits) -> np.ndarray:
    try:
        with tifffile.TiffFile(source, name=path.name) as tiff:  # a temporary file's own name is a number
            # Counted from the page headers, before any pixel is decoded: a channel is one plane.
            if len(tiff.pages) > 1:
                raise InputError(f"{path}: {len(tiff.pages)} pages; a channel file holds one plane")
            if tiff.pages:
                shape = tiff.pages[0].shape
                check_pixels(path, shape[1] if len(shape) > 1 else 1, shape[0], limits)
            array = tiff.asarray()
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{path}: corrupt or truncated TIFF ({type(exc).__name__}: {exc})") from None
    if array.size == 0:  # tifffile only warns when it finds no readable page
        raise InputError(f"{path}: corrupt or truncated TIFF (no image data)")
    return array


def _decode_jpeg(path: Path, source: IO[bytes], limits: Limits) -> np.ndarray:
    # PIL, not OpenCV: libjpeg in OpenCV silently returns a partial image for a truncated file.
    try:
        with Image.open(source) as image:
            check_pixels(path, *image.size, limits)
            image.load()
            return np.asarray(image)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: corrupt or truncated JPEG ({exc})") from None


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:  # PIL reads the header only
        return image.size


def _tiff(path: Path, source: IO[bytes], limits: Limits) -> np.ndarray:
    with _unpacked(path, source, limits) as tiff_file:
        return _decode_tiff(path, tiff_file, limits)


def _tiff_size(path: Path) -> tuple[int, int]:
    with _opened(path) as handle, _unpacked(path, handle, LIMITS) as tiff_file, \
            tifffile.TiffFile(tiff_file, name=path.name) as tiff:
        series = tiff.series[0]  # multi-channel files too, whatever their axes' order
        return series.shape[series.axes.index("X")], series.shape[series.axes.index("Y")]


def _encode_tiff(path: Path, plane: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, plane)
    data = buffer.getvalue()
    return gzip.compress(data, compresslevel=6) if path.name.lower().endswith(".gz") else data


def _encode_tinted_jpeg(path: Path, plane: np.ndarray) -> bytes:
    match = channel_file_pattern().match(path.name)
    if match is None:
        raise ValueError(f"{path.name}: a tinted JPG needs a {{ID}}_{{channel}}.jpg name")
    rgb = np.zeros((*plane.shape, 3), np.uint8)
    for colour in TINTS[match["channel"].lower()]:
        rgb[..., colour] = plane // 257 if plane.dtype == np.uint16 else plane
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, subsampling=0)
    return buffer.getvalue()


PNG = register_format(ChannelFormat((".png",), lambda path, source, limits: _decode_png(path, source.read(), limits),
                                    _png_size, lambda _path, plane: encode_png(plane)))
TIFF = register_format(ChannelFormat((".tif", ".tiff", ".tif.gz", ".tiff.gz"), _tiff, _tiff_size, _encode_tiff))
JPEG = register_format(ChannelFormat((".jpg", ".jpeg"), _decode_jpeg, _png_size, _encode_tinted_jpeg))


def _to_grey(path: Path, array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., :3].max(axis=-1)
    raise InputError(f"{path}: expected a single-channel image, got shape {array.shape}")


# RGB weights of the red (microtubules), green (protein), blue (nucleus) and yellow (ER)
# channels: the protein at full strength, the references dimmer, yellow as red + green.
MIX = np.array([[0.55, 0.0, 0.0, 0.45],
                [0.0, 1.0, 0.0, 0.45],
                [0.0, 0.0, 0.75, 0.0]], np.float32)


def composite(tile: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """An 8-bit RGB (S, S, 3) view of a (4, S, S) tile.

    Each channel is scaled so that its ``percentile`` over the cell (its non-zero pixels) becomes
    full intensity, then the channels are mixed with :data:`MIX` and clipped.
    """
    if tile.ndim != 3 or tile.shape[0] != len(CHANNELS):
        raise ValueError(f"need a (4, S, S) tile, got {tile.shape}")
    scaled = np.zeros(tile.shape, np.float32)
    for channel, plane in enumerate(tile):
        signal = plane[plane > 0]
        if signal.size:
            top = max(float(np.percentile(signal, percentile)), 1.0)
            scaled[channel] = plane / np.float32(top)
    rgb = np.tensordot(MIX, np.minimum(scaled, 1.0), axes=1)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)
