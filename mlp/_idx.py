"""IDX files, the format of MNIST and Fashion-MNIST: the reader and the
check that an images file and its labels file belong together."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
Split = tuple[np.ndarray, np.ndarray]

IMAGE_SHAPE = (28, 28)

# IDX type codes; multi-byte values are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1 << 24


class IDXFormatError(ValueError):
    """An IDX file is malformed, or its content does not fit the dataset it belongs to."""


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file into a native-endian NumPy array.

    The file may be raw or gzipped; which one is decided by the gzip magic
    bytes, not by the file name.  The header is a magic number (two zero
    bytes, a type code, the number of dimensions) followed by each dimension
    as a big-endian 32-bit integer; the payload is the items in C order.

    Supported type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64.

    Parameters
    ----------
    path:
        The file to read.

    Returns
    -------
    numpy.ndarray
        A writable array with the file's shape and the dtype of its type code.

    Raises
    ------
    IDXFormatError
        If the magic number or type code is wrong, a dimension is negative,
        the payload is shorter or longer than the header says, or the gzip
        stream is corrupt.  The message names the file and what was expected.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not gzipped:
            return _parse_idx(raw, path)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse_idx(stream, path)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"{path}: corrupt gzip data ({exc})") from exc


def read_images_and_labels(image_path: Path, label_path: Path, n_classes: int) -> Split:
    """Read one images/labels pair of an MNIST-format dataset, check that they agree, and convert them.

    Returns ``(X, y)``: ``X`` C-contiguous float32 of shape ``(N, 784)`` with
    the pixel intensities scaled from 0..255 to [0, 1], ``y`` int64 of shape
    ``(N,)`` with values in ``0 .. n_classes - 1``.  Raises
    :class:`IDXFormatError`, naming the file, when the images are not uint8
    of shape ``(N, 28, 28)``, the labels not uint8 of shape ``(N,)`` with
    values below ``n_classes``, or the two counts differ.
    """
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise IDXFormatError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), "
            f"found {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IDXFormatError(
            f"{label_path}: expected uint8 labels of shape (N,), found {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise IDXFormatError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels; "
            "expected the same number"
        )
    if labels.size and int(labels.max()) >= n_classes:
        raise IDXFormatError(
            f"{label_path}: expected labels in 0..{n_classes - 1}, found {int(labels.max())}"
        )
    X = images.reshape(len(images), -1).astype(np.float32)
    X /= np.float32(255.0)
    return X, labels.astype(np.int64)


def _read_up_to(stream: BinaryIO, n: int) -> bytearray:
    """Read ``n`` bytes, or fewer if the stream ends first, in bounded chunks.

    Chunking keeps a corrupt header that claims an enormous payload from
    allocating all of it up front.
    """
    buffer = bytearray()
    while len(buffer) < n:
        chunk = stream.read(min(_READ_CHUNK, n - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


def _count_remaining(stream: BinaryIO) -> int:
    count = 0
    while chunk := stream.read(_READ_CHUNK):
        count += len(chunk)
    return count


def _parse_idx(stream: BinaryIO, path: Path) -> np.ndarray:
    magic = _read_up_to(stream, 4)
    if len(magic) < 4:
        raise IDXFormatError(
            f"{path}: not an IDX file: expected a 4-byte magic number, found {len(magic)} bytes"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise IDXFormatError(
            f"{path}: not an IDX file: expected the magic number to start with bytes 00 00, "
            f"found {magic[0]:02x} {magic[1]:02x}"
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        supported = ", ".join(f"0x{c:02X} ({_IDX_DTYPES[c].name})" for c in _IDX_DTYPES)
        raise IDXFormatError(
            f"{path}: unsupported IDX type code 0x{code:02X}; expected one of {supported}"
        )
    dtype = _IDX_DTYPES[code]

    header = _read_up_to(stream, 4 * ndim)
    if len(header) < 4 * ndim:
        raise IDXFormatError(
            f"{path}: truncated header: expected {4 * ndim} bytes for {ndim} dimensions, "
            f"found {len(header)}"
        )
    shape = struct.unpack(f">{ndim}i", header)
    if any(d < 0 for d in shape):
        raise IDXFormatError(f"{path}: expected non-negative dimensions, found {shape}")

    count = math.prod(shape)
    expected = count * dtype.itemsize
    payload = _read_up_to(stream, expected)
    if len(payload) < expected:
        raise IDXFormatError(
            f"{path}: truncated payload: expected {expected} bytes for shape {shape} "
            f"of {dtype.name}, found {len(payload)}"
        )
    trailing = _count_remaining(stream)
    if trailing:
        raise IDXFormatError(
            f"{path}: expected {expected} bytes of payload for shape {shape} of {dtype.name}, "
            f"found {trailing} more bytes after it"
        )
    array = np.frombuffer(payload, dtype=dtype, count=count).reshape(shape)
    # Big-endian data is converted (copied) to native order; single-byte data
    # stays a view of the writable bytearray.
    return array.astype(dtype.newbyteorder("="), copy=False)
