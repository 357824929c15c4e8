"""The container of a checkpoint: one ``.npz`` holding a JSON header and plain arrays, written atomically
and read with every array's size checked against the bytes the file holds before it is allocated.

What the header and the arrays mean is :mod:`mlp.checkpoint`'s; this module knows the container only.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Union

import numpy as np

from ._files import atomic_write_bytes
from ._version import __version__

PathLike = Union[str, "os.PathLike[str]"]

#: format written by this version; formats 1 (weights only) and 2 are read
CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)


def write_archive(path: PathLike, header: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``header`` (JSON) and ``arrays`` to one ``.npz`` at ``path``, atomically; returns the path.

    ``path`` is used as given (``np.savez`` would append ``.npz`` to other names).
    """
    path = Path(path)
    header = {"format": CHECKPOINT_FORMAT, "library": "mlp", "version": __version__, **header}
    try:
        header_bytes = json.dumps(header).encode()
    except TypeError as exc:
        raise TypeError(f"metadata: expected JSON-serialisable values ({exc})") from None
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(header_bytes, dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_archive(path: PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON header and the arrays of a checkpoint; errors name the file and what is wrong with it.

    Each array's ``.npy`` header is checked against the bytes the archive holds for it before the array is
    read, so a header claiming more than the file holds allocates nothing.  The JSON header is returned
    as it is: :func:`read_model_record` and :meth:`TrainingState.from_archive` check it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint file at {str(path)!r}")
    try:
        arrays = _read_members(path)
        if "header" not in arrays or "params" not in arrays:
            raise ValueError(f"no {'header' if 'header' not in arrays else 'params'} array")
        header = json.loads(bytes(arrays.pop("header")).decode())
        if not isinstance(header, dict):
            raise ValueError(f"expected a JSON object in 'header', got {type(header).__name__}")
    except Exception as exc:
        raise ValueError(f"path: {str(path)!r} is not a readable mlp checkpoint ({exc.__class__.__name__}: {exc})") \
            from None
    if header.get("library") != "mlp" or header.get("format") not in READABLE_FORMATS:
        raise ValueError(f"path: {str(path)!r} is not an mlp checkpoint of format "
                         f"{' or '.join(map(str, READABLE_FORMATS))} "
                         f"(found library={_show(header.get('library'))}, format={_show(header.get('format'))})")
    return header, arrays


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """The ``.npy`` members of the zip archive at ``path``, by name (``np.load`` reads the same, but trusts
    each member's header about its size); other members are ignored."""
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-len(".npy")]
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"{name}: .npy format version {version[0]}.{version[1]} is not read here")
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(f)
                if dtype.hasobject:
                    raise ValueError(f"{name}: holds Python objects (dtype {dtype}); a checkpoint holds plain arrays")
                claimed, held = math.prod(shape) * dtype.itemsize, info.file_size - f.tell()
                if claimed != held:
                    raise ValueError(f"{name}: its .npy header claims shape {shape} of {dtype} ({claimed} bytes), "
                                     f"the archive holds {held} bytes for it")
            with archive.open(info) as f:
                arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _show(value: Any) -> str:
    """``repr(value)``, cut short: a header field can be as long as a crafted file makes it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
