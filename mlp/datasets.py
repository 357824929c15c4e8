"""Datasets: MNIST and Fashion-MNIST from IDX files, and a generated toy problem.

:func:`load` returns ``((X_train, y_train), (X_test, y_test))``: ``X`` is a
C-contiguous ``float32`` array of shape ``(N, D)`` and ``y`` an ``int64`` array
of class indices of shape ``(N,)``.

The MNIST-format datasets (``"mnist"``, ``"fashion-mnist"``) are four IDX
files, each raw or gzipped::

    train-images-idx3-ubyte  train-labels-idx1-ubyte
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

They are looked up in these folders, and the first one holding all four wins:

1. ``data_dir``, if given: ``data_dir/<name>/``, then ``data_dir`` itself;
2. the folder named by the environment variable ``MLP_DATA_DIR``, with the
   same two layouts;
3. the user cache, ``$XDG_CACHE_HOME/mlp/<name>`` or ``~/.cache/mlp/<name>``;
4. folders installed by system packages (:data:`SYSTEM_DIRS`), for example
   ``/usr/share/datasets/fashion-mnist`` from Debian's
   ``dataset-fashion-mnist``;
5. if ``download`` is true, the files are downloaded into the user cache.

Downloads are checked against the published MD5 checksums of the ``.gz``
files (:data:`CHECKSUMS`).  Files found locally are not: they are trusted once
:func:`read_idx` has checked their structure, because redistributed copies
(Debian's, for one) are recompressed and so have other checksums while holding
the same data.

``"quadrants"`` is generated, not read: 2-D points uniform in [-1, 1]^2 and
labelled by quadrant (0: x > 0, y > 0; 1: x < 0, y > 0; 2: x < 0, y < 0;
3: x > 0, y < 0).  A point closer than ``margin`` to either axis is rejected
and drawn again, which leaves a gap of ``2 * margin`` between the classes so
that 100 % accuracy is attainable.  Options: ``n_train`` (4000), ``n_test``
(1000), ``seed`` (0; the same seed always gives the same points, ``None``
draws fresh entropy) and ``margin`` (0.05, in [0, 1)).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

__all__ = [
    "CHECKSUMS",
    "CLASS_NAMES",
    "DATA_DIR_ENV",
    "DOWNLOAD_TIMEOUT_S",
    "DatasetNotFoundError",
    "IDXFormatError",
    "IDX_FILES",
    "MIRRORS",
    "NAMES",
    "SYSTEM_DIRS",
    "load",
    "read_idx",
]

PathLike = Union[str, "os.PathLike[str]"]
Split = tuple[np.ndarray, np.ndarray]

#: Canonical dataset names accepted by :func:`load`.
NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "quadrants")

#: Human-readable name of each class index, per dataset.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "quadrants": ("upper right", "upper left", "lower left", "lower right"),
}

#: The four IDX files of an MNIST-format dataset, in the order
#: train images, train labels, test images, test labels (names without ``.gz``).
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: Base URLs to download each dataset's ``.gz`` files from, tried in order.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

#: Published MD5 checksums of the downloaded ``.gz`` files.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: Folders where system packages install a dataset, searched after the user
#: cache.  Debian's ``dataset-fashion-mnist`` puts its files in the one below.
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "mnist": (),
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

#: Environment variable naming a folder to look for datasets in.
DATA_DIR_ENV = "MLP_DATA_DIR"

#: Seconds a download waits on the network (connecting, or between two reads)
#: before giving up on a mirror.
DOWNLOAD_TIMEOUT_S = 30.0

_ALIASES = {"fashion_mnist": "fashion-mnist"}
_IMAGE_SHAPE = (28, 28)
_QUADRANTS_DEFAULTS: dict[str, Any] = {"n_train": 4000, "n_test": 1000, "seed": 0, "margin": 0.05}

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


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files were found nowhere and could not be downloaded.

    Attributes
    ----------
    searched:
        The folders looked in, in lookup order.
    failures:
        ``(url, reason)`` for each failed download attempt of the last file
        tried; empty when no download was attempted.
    """

    def __init__(
        self,
        message: str,
        searched: Sequence[Path] = (),
        failures: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.searched = tuple(searched)
        self.failures = tuple(failures)


# --------------------------------------------------------------------------
# IDX reader
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------


def load(
    name: str,
    data_dir: PathLike | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
    progress: bool | None = None,
    **kwargs: Any,
) -> tuple[Split, Split]:
    """Load a dataset as ``((X_train, y_train), (X_test, y_test))``.

    Parameters
    ----------
    name:
        One of :data:`NAMES`, case-insensitive; ``"fashion_mnist"`` is
        accepted for ``"fashion-mnist"``.
    data_dir:
        Folder to look in first, holding the files directly or in a subfolder
        named after the dataset (``data_dir/fashion-mnist/``).  See the module
        docstring for the full lookup order.
    download:
        Whether to download the files into the user cache when they are found
        nowhere else.
    mirrors:
        Base URLs to download from, tried in order, instead of
        :data:`MIRRORS`; each file's URL is the base URL followed by its
        ``.gz`` file name.
    progress:
        Show a download progress bar (needs ``tqdm``).  ``None`` (the default)
        shows it when standard error is a terminal.
    **kwargs:
        Options of generated datasets.  ``"quadrants"`` takes ``n_train``
        (default 4000), ``n_test`` (1000), ``seed`` (0) and ``margin`` (0.05),
        described in the module docstring.  The MNIST-format datasets take
        none.  ``data_dir``, ``download``, ``mirrors`` and ``progress`` do not
        apply to generated datasets and are ignored for them.

    Returns
    -------
    ((X_train, y_train), (X_test, y_test))
        ``X`` is C-contiguous ``float32`` of shape ``(N, D)``; ``y`` is
        ``int64`` of shape ``(N,)`` with values in ``0 .. len(CLASS_NAMES[name]) - 1``.
        MNIST and Fashion-MNIST: ``D = 784`` (28 x 28 pixels, row-major),
        pixel intensities scaled from 0..255 to [0, 1]; 60000 training and
        10000 test samples.  Quadrants: ``D = 2``, points in [-1, 1]^2.

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    TypeError
        If ``kwargs`` holds options the dataset does not take.
    DatasetNotFoundError
        If the files are found nowhere and were not (or could not be)
        downloaded; the message lists every folder looked in, every failed
        download, and how to fix it.
    IDXFormatError
        If a file is malformed, or images and labels do not agree.
    """
    canonical = _canonical_name(name)
    if canonical == "quadrants":
        return _quadrants(**_check_options(canonical, kwargs, _QUADRANTS_DEFAULTS))
    _check_options(canonical, kwargs, {})
    return _load_idx_dataset(canonical, data_dir, download, mirrors, progress)


def _canonical_name(name: object) -> str:
    if isinstance(name, str):
        key = name.strip().lower()
        key = _ALIASES.get(key, key)
        if key in NAMES:
            return key
    expected = ", ".join(repr(n) for n in NAMES)
    raise ValueError(f"name must be one of {expected} (or 'fashion_mnist'), got {name!r}")


def _check_options(name: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        accepted = ", ".join(defaults) if defaults else "none"
        raise TypeError(
            f"load() got unexpected keyword argument(s) {', '.join(map(repr, unknown))} "
            f"for dataset {name!r}; it takes: {accepted}"
        )
    return {**defaults, **given}


def _cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/mlp/<name>``, or ``~/.cache/mlp/<name>`` (relative XDG paths are ignored)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "mlp" / name


def _search_places(name: str, data_dir: PathLike | None) -> list[tuple[Path, str]]:
    """The folders to look in, in order, each with where it came from."""
    places: list[tuple[Path, str]] = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        places += [(base / name, "data_dir"), (base, "data_dir")]
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        base = Path(env).expanduser()
        places += [(base / name, DATA_DIR_ENV), (base, DATA_DIR_ENV)]
    places.append((_cache_dir(name), "user cache"))
    places += [(Path(folder), "system folder") for folder in SYSTEM_DIRS.get(name, ())]
    return places


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete_set(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (raw preferred over .gz), or None if any is missing."""
    found = [_find_file(folder, stem) for stem in IDX_FILES]
    if any(f is None for f in found):
        return None
    return found  # type: ignore[return-value]


def _load_idx_dataset(
    name: str,
    data_dir: PathLike | None,
    download: bool,
    mirrors: Sequence[str] | None,
    progress: bool | None,
) -> tuple[Split, Split]:
    places = _search_places(name, data_dir)
    for folder, _ in places:
        files = _complete_set(folder)
        if files is not None:
            return _read_split(name, files)

    failures: list[tuple[str, str]] = []
    if download:
        cache = _cache_dir(name)
        if mirrors is None:
            mirrors = MIRRORS.get(name, ())
        elif isinstance(mirrors, str):
            mirrors = (mirrors,)
        if progress is None:
            progress = _stderr_is_terminal()
        failures = _download(name, cache, mirrors, progress)
        if not failures:
            files = _complete_set(cache)
            if files is not None:
                return _read_split(name, files)
            failures = [(str(cache), "the downloaded files disappeared before they could be read")]
    raise DatasetNotFoundError(
        _not_found_message(name, places, download, failures),
        searched=[folder for folder, _ in places],
        failures=failures,
    )


def _not_found_message(
    name: str,
    places: Sequence[tuple[Path, str]],
    download: bool,
    failures: Sequence[tuple[str, str]],
) -> str:
    lines = [
        f"Could not find the {name} dataset: no folder holds all four of "
        f"{', '.join(IDX_FILES)} (each raw or .gz).",
        "Looked in:",
    ]
    for folder, origin in places:
        lines.append(f"  {folder}  [{origin}: {_what_is_missing(folder)}]")
    if DATA_DIR_ENV not in {origin for _, origin in places}:
        lines.append(f"  (${DATA_DIR_ENV} is not set)")
    if failures:
        lines.append(f"Downloading into {_cache_dir(name)} failed:")
        lines += [f"  {url}: {reason}" for url, reason in failures]
    lines.append("To fix it, do one of:")
    lines.append(f"  - pass data_dir= a folder holding the files (or a '{name}' subfolder with them);")
    lines.append(f"  - set the environment variable {DATA_DIR_ENV} to such a folder;")
    if name == "fashion-mnist":
        lines.append("  - on Debian or Ubuntu: sudo apt-get install dataset-fashion-mnist;")
    if not download:
        lines.append(f"  - call load({name!r}, download=True) to download them into {_cache_dir(name)}.")
    else:
        lines.append("  - check the network connection, or pass mirrors= other base URLs to download from.")
    return "\n".join(lines)


def _what_is_missing(folder: Path) -> str:
    if not folder.is_dir():
        return "no such folder"
    missing = [stem for stem in IDX_FILES if _find_file(folder, stem) is None]
    return "missing " + ", ".join(missing)


def _read_split(name: str, files: Sequence[Path]) -> tuple[Split, Split]:
    n_classes = len(CLASS_NAMES[name])
    train = _images_and_labels(files[0], files[1], n_classes)
    test = _images_and_labels(files[2], files[3], n_classes)
    return train, test


def _images_and_labels(image_path: Path, label_path: Path, n_classes: int) -> Split:
    """Read one images/labels pair, check that they agree, and convert them."""
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
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


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


class _ChecksumError(Exception):
    pass


class _NoProgress:
    def update(self, n: int) -> None:
        pass


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _progress_bar(enabled: bool, total: int | None, description: str) -> Any:
    """A tqdm byte counter, or a context manager that shows nothing (disabled, or no tqdm)."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024)
    return contextlib.nullcontext(_NoProgress())


def _download(name: str, folder: Path, mirrors: Sequence[str], progress: bool) -> list[tuple[str, str]]:
    """Download the missing ``.gz`` files of ``name`` into ``folder``.

    Returns an empty list on success; otherwise, for the first file that no
    mirror could deliver, ``(url, reason)`` for each mirror tried.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [(str(folder), f"cannot create the folder ({exc})")]
    if not mirrors:
        return [("(no mirrors)", f"no download mirrors are configured for {name}")]
    checksums = CHECKSUMS[name]
    for stem in IDX_FILES:
        if _find_file(folder, stem) is not None:
            continue
        file_name = f"{stem}.gz"
        failures = []
        for base in mirrors:
            url = base if base.endswith("/") else base + "/"
            url += file_name
            try:
                _fetch(url, folder / file_name, checksums[file_name], progress)
            except _ChecksumError as exc:
                failures.append((url, str(exc)))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                failures.append((url, _describe_failure(exc)))
            else:
                break
        else:
            return failures
    return []


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP error {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return f"timed out after {DOWNLOAD_TIMEOUT_S:g} s"
    return f"{type(exc).__name__}: {exc}"


def _fetch(url: str, target: Path, expected_md5: str, progress: bool) -> None:
    """Stream ``url`` into a temporary file next to ``target``, check its MD5, then move it into place.

    ``target`` only ever appears complete and verified; the temporary file is
    removed whatever happens.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "mlp-datasets"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with os.fdopen(fd, "wb") as out, _progress_bar(progress, total, target.name) as bar:
                for chunk in _chunks(response):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            actual = digest.hexdigest()
            if actual != expected_md5:
                raise _ChecksumError(
                    f"MD5 checksum mismatch: expected {expected_md5}, got {actual}; the file was discarded"
                )
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _chunks(response: Any, size: int = 1 << 16) -> Iterator[bytes]:
    while chunk := response.read(size):
        yield chunk


# --------------------------------------------------------------------------
# Generated datasets
# --------------------------------------------------------------------------


def _quadrants(
    n_train: int = 4000, n_test: int = 1000, seed: int | None = 0, margin: float = 0.05
) -> tuple[Split, Split]:
    """The quadrant problem: which quadrant of the plane a point lies in.

    Points are uniform in [-1, 1]^2 except near the axes: a point closer than
    ``margin`` to either axis is rejected and drawn again, which leaves a gap
    of ``2 * margin`` between the classes so that 100 % accuracy is attainable.
    (Sampling each coordinate's magnitude uniformly in (margin, 1] with a
    random sign gives exactly that distribution without a loop, and is how it
    is done.)  Every coordinate satisfies ``|x| >= float32(margin)``.

    Labels: 0 for x > 0, y > 0; 1 for x < 0, y > 0; 2 for x < 0, y < 0;
    3 for x > 0, y < 0 (see ``CLASS_NAMES["quadrants"]``).

    The training and test sets come from independent streams of one
    ``numpy.random.SeedSequence(seed)``, so each is a deterministic function
    of ``seed`` and its own size, and a larger set starts with the points of
    a smaller one.  ``seed=None`` draws fresh entropy.

    Returns ``((X_train, y_train), (X_test, y_test))``: ``X`` float32 of
    shape ``(n, 2)``, ``y`` int64 of shape ``(n,)``.
    """
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{arg} must be a non-negative integer, got {value!r}")
    if not (isinstance(margin, (int, float, np.floating)) and 0.0 <= margin < 1.0):
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    train = _quadrant_points(np.random.default_rng(train_seed), int(n_train), float(margin))
    test = _quadrant_points(np.random.default_rng(test_seed), int(n_test), float(margin))
    return train, test


def _quadrant_points(rng: np.random.Generator, n: int, margin: float) -> Split:
    # One row of draws per point, so the first k points do not depend on n.
    draws = rng.random((n, 4))
    magnitude = 1.0 - draws[:, :2] * (1.0 - margin)  # in (margin, 1]
    sign = np.where(draws[:, 2:] < 0.5, -1.0, 1.0)
    X = np.ascontiguousarray(magnitude * sign, dtype=np.float32)
    right, up = X[:, 0] > 0, X[:, 1] > 0
    y = np.where(up, np.where(right, 0, 1), np.where(right, 3, 2)).astype(np.int64)
    return X, y
