"""Datasets: MNIST and Fashion-MNIST from IDX files, a generated toy problem,
and the user's own arrays from an ``.npz`` file.

:func:`load` returns ``((X_train, y_train), (X_test, y_test))``: ``X`` is a
C-contiguous ``float32`` array of shape ``(N, D)`` and ``y`` an ``int64`` array
of class indices of shape ``(N,)``.  :func:`load_npz` returns the same from an
``.npz`` file holding ``X_train``, ``y_train`` and optionally ``X_test``,
``y_test``.

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
5. if ``download`` is true, the files missing from the user cache are
   downloaded into it with pooch, each from the first mirror that delivers it.

Downloads are checked against the published MD5 checksums of the ``.gz``
files (:data:`CHECKSUMS`); a download whose checksum differs is deleted, never
kept in the cache.  Files found locally are not checked: they are trusted
once :func:`read_idx` has checked their structure, because redistributed
copies (Debian's, for one) are recompressed and so have other checksums while
holding the same data.

``"quadrants"`` is generated, not read (see :mod:`mlp._quadrants`): 2-D points
uniform in [-1, 1]^2 and labelled by quadrant (0: x > 0, y > 0; 1: x < 0,
y > 0; 2: x < 0, y < 0; 3: x > 0, y < 0), with a gap of ``2 * margin``
between the classes.  Options: ``n_train`` (4000), ``n_test`` (1000), ``seed``
(0; the same seed always gives the same points, ``None`` draws fresh entropy)
and ``margin`` (0.05, in [0, 1)).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _quadrants
from ._idx import IDXFormatError, PathLike, Split, read_idx, read_images_and_labels
from ._npz import load_npz

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
    "load_npz",
    "read_idx",
]

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
    "quadrants": _quadrants.CLASS_NAMES,
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
        Show, on standard error, a progress bar for each download and the
        line naming its URL and target file.  ``None`` (the default) shows
        them when standard error is a terminal.
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
        return _quadrants.quadrants(**_check_options(canonical, kwargs, _quadrants.DEFAULTS))
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
    train = read_images_and_labels(files[0], files[1], n_classes)
    test = read_images_and_labels(files[2], files[3], n_classes)
    return train, test


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _download(name: str, folder: Path, mirrors: Sequence[str], progress: bool) -> list[tuple[str, str]]:
    """Download the ``.gz`` files of ``name`` missing from ``folder``, each from the first mirror serving it.

    pooch streams each file into a temporary file in ``folder``, checks its
    MD5 and only then moves it into place, so a file with the wrong checksum
    is never left behind.  Returns an empty list on success; otherwise, for
    the first file that no mirror could deliver, ``(url, reason)`` for each
    mirror tried.
    """
    if not mirrors:
        return [("(no mirrors)", f"no download mirrors are configured for {name}")]
    # Imported here rather than at the top: pooch and requests take about a
    # tenth of a second to import, and most loads never download.
    import pooch

    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=DOWNLOAD_TIMEOUT_S)
    with _pooch_messages(pooch.get_logger(), shown=progress):
        for stem in IDX_FILES:
            if _find_file(folder, stem) is not None:
                continue
            file_name = f"{stem}.gz"
            known_hash = f"md5:{CHECKSUMS[name][file_name]}"
            failures = []
            for url in _urls(mirrors, file_name):
                try:
                    pooch.retrieve(url, known_hash, fname=file_name, path=folder, downloader=downloader)
                # requests' errors are OSErrors; pooch reports a checksum mismatch as a ValueError.
                except (OSError, ValueError) as exc:
                    failures.append((url, _describe_failure(exc)))
                else:
                    break
            else:
                return failures
    return []


def _urls(mirrors: Sequence[str], file_name: str) -> Iterator[str]:
    for base in mirrors:
        yield (base if base.endswith("/") else base + "/") + file_name


@contextlib.contextmanager
def _pooch_messages(logger: logging.Logger, shown: bool) -> Iterator[None]:
    """Let pooch's "Downloading data from ..." lines through only while progress is shown.

    A filter rather than a level: pooch's logger is not registered with
    :mod:`logging`, so a change of its level would not reset its cached
    answers to ``isEnabledFor``.
    """
    if shown:
        yield
        return

    def above_info(record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO

    logger.addFilter(above_info)
    try:
        yield
    finally:
        logger.removeFilter(above_info)


def _describe_failure(exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP error {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return f"timed out after {DOWNLOAD_TIMEOUT_S:g} s"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({exc})"
    if isinstance(exc, ValueError) and not isinstance(exc, requests.RequestException):
        return str(exc)  # pooch's checksum mismatch, which names both hashes and says the file was deleted
    return f"{type(exc).__name__}: {exc}"
