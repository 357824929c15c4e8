"""Tests for mlp.datasets: the IDX reader, the loader's lookup order and
downloads (through pooch) from a local HTTP server on 127.0.0.1.

Every test runs with HOME, XDG_CACHE_HOME, MLP_DATA_DIR, the system folders
and the download mirrors pointed into its own temporary folder, and with no
HTTP proxy, so nothing reads the real home or reaches past 127.0.0.1.  The
one exception is the test of the real Fashion-MNIST files that Debian's
``dataset-fashion-mnist`` installs.  The quadrants problem and load_npz have
test files of their own.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import logging
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mlp import datasets

REAL_SYSTEM_DIRS = dict(datasets.SYSTEM_DIRS)
IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = datasets.IDX_FILES


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as an IDX file (header, then big-endian items)."""
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_dataset(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0) -> dict:
    """Write a small MNIST-format dataset into ``folder``; return its arrays by file name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        TRAIN_IMAGES: rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, size=n_train, dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(folder / (f"{stem}.gz" if gz else stem), array, gz=gz)
    return arrays


def assert_matches(loaded, arrays: dict) -> None:
    """``loaded`` is what load() returned for the dataset written by make_dataset()."""
    (X, y), (X_test, y_test) = loaded
    for X_, y_, images, labels in (
        (X, y, arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]),
        (X_test, y_test, arrays[TEST_IMAGES], arrays[TEST_LABELS]),
    ):
        assert X_.dtype == np.float32 and X_.flags.c_contiguous
        assert X_.shape == (len(images), 784)
        assert y_.dtype == np.int64 and y_.shape == (len(labels),)
        # uint8 / 255 computed in float32 is exact to within one rounding.
        np.testing.assert_allclose(X_, images.reshape(len(images), 784) / 255.0, rtol=1e-7, atol=0)
        np.testing.assert_array_equal(y_, labels)


def n_train_of(loaded) -> int:
    return len(loaded[0][0])


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Point every place the loader looks at into tmp_path; disable the real mirrors."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("MLP_DATA_DIR", raising=False)
    # requests honours proxy variables; the local test server must be reached directly.
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(
        datasets, "SYSTEM_DIRS", {name: (tmp_path / "system" / name,) for name in ("mnist", "fashion-mnist")}
    )
    monkeypatch.setattr(datasets, "MIRRORS", {"mnist": (), "fashion-mnist": ()})
    return tmp_path


# --------------------------------------------------------------------------
# IDX reader
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", list(IDX_CODES), ids=lambda d: d.name)
def test_read_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    for shape in [(7,), (3, 5), (2, 3, 4), (2, 1, 2, 3)]:
        if dtype.kind == "f":
            array = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        path = write_idx(tmp_path / f"a{len(shape)}.idx", array, gz=gz)
        result = datasets.read_idx(path)
        assert result.dtype == dtype and result.dtype.isnative
        assert result.shape == shape
        np.testing.assert_array_equal(result, array)
        assert result.flags.writeable


def test_read_idx_decides_gzip_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    gz_without_suffix = tmp_path / "data.idx"
    gz_without_suffix.write_bytes(gzip.compress(idx_bytes(array)))
    raw_with_suffix = tmp_path / "data.idx.gz"
    raw_with_suffix.write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(datasets.read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(datasets.read_idx(str(raw_with_suffix)), array)


@pytest.mark.parametrize("shape", [(0,), (0, 28, 28), (5, 0)])
def test_read_idx_empty_array(tmp_path, shape):
    path = write_idx(tmp_path / "empty.idx", np.zeros(shape, dtype=np.float64))
    result = datasets.read_idx(path)
    assert result.shape == shape and result.dtype == np.float64


def good_header(shape=(10,), code=0x08) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}i", *shape)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\x01\x00\x08\x01" + struct.pack(">i", 2) + b"ab", "start with bytes 00 00, found 01 00"),
        (b"\x00\x00", "expected a 4-byte magic number, found 2 bytes"),
        (b"", "found 0 bytes"),
        (good_header(code=0x0A) + bytes(10), "unsupported IDX type code 0x0A"),
        (bytes([0, 0, 8, 3]) + struct.pack(">2i", 2, 2), "expected 12 bytes for 3 dimensions, found 8"),
        (good_header(shape=(2, -3)), "non-negative dimensions, found (2, -3)"),
        (good_header() + bytes(9), "truncated payload: expected 10 bytes for shape (10,) of uint8, found 9"),
        (good_header(shape=(2, 2), code=0x0D) + bytes(15), "expected 16 bytes for shape (2, 2) of float32, found 15"),
        (good_header() + bytes(11), "found 1 more bytes after it"),
        (good_header(shape=(0,)) + b"xyz", "found 3 more bytes after it"),
    ],
    ids=[
        "bad-magic",
        "short-magic",
        "empty-file",
        "type-code",
        "short-header",
        "negative-dim",
        "truncated",
        "truncated-float",
        "trailing",
        "trailing-after-empty",
    ],
)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_rejects_malformed_files(tmp_path, content, expected, gz):
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(datasets.IDXFormatError) as info:
        datasets.read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message
    assert isinstance(info.value, ValueError)


def corrupt_gzip_variants(good: bytes) -> dict[str, bytes]:
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF  # the CRC-32 in the trailer
    return {
        "cut-in-half": good[: len(good) // 2],
        "bad-crc": bytes(bad_crc),
        "garbage-after-magic": b"\x1f\x8b" + b"not really gzip data",
    }


@pytest.mark.parametrize("variant", ["cut-in-half", "bad-crc", "garbage-after-magic"])
def test_read_idx_rejects_corrupt_gzip(tmp_path, variant):
    rng = np.random.default_rng(2)
    good = gzip.compress(idx_bytes(rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(corrupt_gzip_variants(good)[variant])
    with pytest.raises(datasets.IDXFormatError, match="corrupt gzip data") as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        datasets.read_idx(tmp_path / "nope.idx")


# --------------------------------------------------------------------------
# Names and options
# --------------------------------------------------------------------------


def test_names_and_class_names():
    assert datasets.NAMES == ("mnist", "fashion-mnist", "quadrants")
    assert set(datasets.CLASS_NAMES) == set(datasets.NAMES)
    assert datasets.CLASS_NAMES["mnist"] == tuple("0123456789")
    assert len(datasets.CLASS_NAMES["fashion-mnist"]) == 10
    assert datasets.CLASS_NAMES["fashion-mnist"][0] == "T-shirt/top"
    assert datasets.CLASS_NAMES["fashion-mnist"][9] == "Ankle boot"
    assert len(datasets.CLASS_NAMES["quadrants"]) == 4


def test_unknown_name_is_a_value_error_naming_everything():
    with pytest.raises(ValueError) as info:
        datasets.load("cifar10")
    message = str(info.value)
    assert message.startswith("name must be one of")
    for name in datasets.NAMES:
        assert repr(name) in message
    assert "'cifar10'" in message


@pytest.mark.parametrize("name", ["FASHION_MNIST", "Fashion-MNIST", "fashion_mnist", " fashion-mnist "])
def test_fashion_mnist_aliases(tmp_path, name):
    arrays = make_dataset(tmp_path / "data" / "fashion-mnist")
    assert_matches(datasets.load(name, tmp_path / "data", download=False), arrays)


@pytest.mark.parametrize(
    "name, options, unknown",
    [("mnist", {"n_train": 10}, ["n_train"]), ("quadrants", {"n_train": 10, "colour": 1}, ["colour"])],
)
def test_unknown_options_are_a_type_error_naming_them(name, options, unknown):
    with pytest.raises(TypeError) as info:
        datasets.load(name, download=False, **options)
    message = str(info.value)
    assert f"unexpected keyword argument(s) {', '.join(map(repr, unknown))} for dataset {name!r}" in message


# --------------------------------------------------------------------------
# Lookup order
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("layout", ["flat", "subfolder"])
def test_data_dir_layouts(tmp_path, layout, gz):
    root = tmp_path / "data"
    arrays = make_dataset(root if layout == "flat" else root / "mnist", gz=gz)
    assert_matches(datasets.load("mnist", data_dir=root, download=False), arrays)
    assert_matches(datasets.load("mnist", data_dir=str(root), download=False), arrays)


def test_subfolder_is_preferred_to_flat_files(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, n_train=3)
    make_dataset(root / "mnist", n_train=5)
    assert n_train_of(datasets.load("mnist", root, download=False)) == 5


def test_raw_and_gz_files_can_be_mixed(tmp_path):
    root = tmp_path / "data"
    arrays = make_dataset(root, gz=True)
    for stem in (TRAIN_LABELS, TEST_IMAGES):
        (root / f"{stem}.gz").unlink()
        write_idx(root / stem, arrays[stem], gz=False)
    assert_matches(datasets.load("mnist", root, download=False), arrays)


def test_lookup_order(isolated, monkeypatch):
    name = "fashion-mnist"
    folders = {
        "data_dir": isolated / "explicit",
        "env": isolated / "env",
        "cache": isolated / "xdg-cache" / "mlp" / name,
        "system": isolated / "system" / name,
    }
    for n_train, folder in enumerate(folders.values(), start=1):
        make_dataset(folder, n_train=n_train)
    monkeypatch.setenv("MLP_DATA_DIR", str(folders["env"]))

    assert n_train_of(datasets.load(name, folders["data_dir"], download=False)) == 1
    assert n_train_of(datasets.load(name, download=False)) == 2
    monkeypatch.delenv("MLP_DATA_DIR")
    assert n_train_of(datasets.load(name, download=False)) == 3
    for path in folders["cache"].iterdir():
        path.unlink()
    assert n_train_of(datasets.load(name, download=False)) == 4
    # A data_dir without the files does not stop the search.
    assert n_train_of(datasets.load(name, isolated / "empty", download=False)) == 4


def test_incomplete_folder_is_skipped(isolated):
    root = isolated / "data"
    make_dataset(root, n_train=3)
    (root / f"{TEST_LABELS}.gz").unlink()
    make_dataset(isolated / "system" / "fashion-mnist", n_train=4)
    assert n_train_of(datasets.load("fashion-mnist", root, download=False)) == 4


def test_cache_falls_back_to_home_without_xdg(isolated, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    arrays = make_dataset(isolated / "home" / ".cache" / "mlp" / "mnist")
    assert_matches(datasets.load("mnist", download=False), arrays)


def test_local_files_are_not_checksummed(tmp_path):
    # Checksums apply to downloads only: these files cannot match CHECKSUMS.
    arrays = make_dataset(tmp_path / "data")
    assert_matches(datasets.load("mnist", tmp_path / "data", download=False), arrays)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({TRAIN_LABELS: np.zeros(5, np.uint8)}, "holds 6 images but"),
        ({TEST_IMAGES: np.zeros((4, 27, 28), np.uint8)}, "expected uint8 images of shape (N, 28, 28)"),
        ({TRAIN_IMAGES: np.zeros((6, 28, 28), np.float32)}, "expected uint8 images"),
        ({TEST_LABELS: np.array([0, 1, 10, 2], np.uint8)}, "expected labels in 0..9, found 10"),
        ({TRAIN_LABELS: np.zeros((6, 1), np.uint8)}, "expected uint8 labels of shape (N,)"),
    ],
    ids=["count-mismatch", "image-shape", "image-dtype", "label-range", "label-shape"],
)
def test_images_and_labels_must_agree(tmp_path, change, expected):
    root = tmp_path / "data"
    make_dataset(root, n_train=6, n_test=4)
    for stem, array in change.items():
        write_idx(root / f"{stem}.gz", array, gz=True)
    with pytest.raises(datasets.IDXFormatError) as info:
        datasets.load("mnist", root, download=False)
    assert expected in str(info.value)
    assert str(root / f"{next(iter(change))}.gz") in str(info.value)


def test_malformed_local_file_is_an_error_not_skipped(isolated):
    root = isolated / "data"
    make_dataset(root)
    (root / f"{TRAIN_IMAGES}.gz").write_bytes(gzip.compress(good_header(shape=(6, 28, 28)) + bytes(100)))
    make_dataset(isolated / "system" / "fashion-mnist")
    with pytest.raises(datasets.IDXFormatError, match="truncated payload"):
        datasets.load("fashion-mnist", root, download=False)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_not_found_lists_every_place_and_the_fixes(isolated, monkeypatch, name):
    partial = isolated / "partial"
    make_dataset(partial)
    (partial / f"{TEST_LABELS}.gz").unlink()
    monkeypatch.setenv("MLP_DATA_DIR", str(isolated / "env"))
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load(name, partial, download=False)
    error = info.value
    assert isinstance(error, FileNotFoundError)
    expected_places = [
        partial / name,
        partial,
        isolated / "env" / name,
        isolated / "env",
        isolated / "xdg-cache" / "mlp" / name,
        isolated / "system" / name,
    ]
    assert list(error.searched) == expected_places
    message = str(error)
    for place in expected_places:
        assert str(place) in message
    assert f"missing {TEST_LABELS}" in message
    assert "no such folder" in message
    assert "data_dir=" in message and "MLP_DATA_DIR" in message and "download=True" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")


# --------------------------------------------------------------------------
# Downloads from a local server
# --------------------------------------------------------------------------


class Server:
    """A tiny HTTP server on 127.0.0.1 serving ``routes``: path -> bytes, an HTTP status, or "slow"."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                route = server.routes.get(self.path, 404)
                try:
                    if route == "slow":
                        time.sleep(1.0)
                        route = 503
                    if isinstance(route, bytes):
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(route)))
                        self.end_headers()
                        self.wfile.write(route)
                    else:
                        self.send_error(route)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def published(isolated, server, monkeypatch):
    """Serve a small MNIST under /good/ and make its MD5s the published checksums."""
    arrays = make_dataset(isolated / "source", gz=True)
    checksums = {}
    for stem in datasets.IDX_FILES:
        data = (isolated / "source" / f"{stem}.gz").read_bytes()
        server.routes[f"/good/{stem}.gz"] = data
        server.routes[f"/broken/{stem}.gz"] = 500
        server.routes[f"/slow/{stem}.gz"] = "slow"
        checksums[f"{stem}.gz"] = hashlib.md5(data).hexdigest()
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", checksums)
    return arrays


def cache_dir(isolated: Path) -> Path:
    return isolated / "xdg-cache" / "mlp" / "mnist"


def test_download_lands_in_cache_and_is_reused(isolated, server, published):
    loaded = datasets.load("mnist", mirrors=[f"{server.url}/good"], progress=False)
    assert_matches(loaded, published)
    assert sorted(p.name for p in cache_dir(isolated).iterdir()) == sorted(f"{s}.gz" for s in datasets.IDX_FILES)
    assert len(server.requests) == 4

    # The second load finds the cache and downloads nothing.
    assert_matches(datasets.load("mnist", mirrors=[f"{server.url}/good/"], progress=False), published)
    assert len(server.requests) == 4


def test_download_fetches_only_missing_files(isolated, server, published):
    cache = cache_dir(isolated)
    cache.mkdir(parents=True)
    for stem in (TRAIN_IMAGES, TEST_LABELS):
        (cache / f"{stem}.gz").write_bytes(server.routes[f"/good/{stem}.gz"])
    assert_matches(datasets.load("mnist", mirrors=[f"{server.url}/good/"], progress=False), published)
    assert sorted(server.requests) == sorted([f"/good/{TRAIN_LABELS}.gz", f"/good/{TEST_IMAGES}.gz"])


def test_checksum_mismatch_keeps_nothing(isolated, server, published, monkeypatch):
    wrong = "0" * 32
    monkeypatch.setitem(datasets.CHECKSUMS["mnist"], f"{TEST_IMAGES}.gz", wrong)
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", mirrors=[f"{server.url}/good/"], progress=False)
    message = str(info.value)
    actual = hashlib.md5(server.routes[f"/good/{TEST_IMAGES}.gz"]).hexdigest()
    assert f"{server.url}/good/{TEST_IMAGES}.gz: MD5 hash of downloaded file" in message
    assert f"expected md5:{wrong} but got {actual}" in message
    # The verified files before it stay; the bad one and every temporary file are gone.
    left = sorted(p.name for p in cache_dir(isolated).iterdir())
    assert left == sorted([f"{TRAIN_IMAGES}.gz", f"{TRAIN_LABELS}.gz"])


def test_checksum_mismatch_falls_through_to_next_mirror(isolated, server, published):
    # A well-formed dataset with other content: it would load, but its checksums are not the published ones.
    make_dataset(isolated / "tampered", seed=1)
    for stem in datasets.IDX_FILES:
        server.routes[f"/tampered/{stem}.gz"] = (isolated / "tampered" / f"{stem}.gz").read_bytes()
    mirrors = [f"{server.url}/tampered/", f"{server.url}/good/"]
    loaded = datasets.load("mnist", mirrors=mirrors, progress=False)
    assert_matches(loaded, published)
    assert server.requests[:2] == [f"/tampered/{TRAIN_IMAGES}.gz", f"/good/{TRAIN_IMAGES}.gz"]
    for stem in datasets.IDX_FILES:
        assert (cache_dir(isolated) / f"{stem}.gz").read_bytes() == server.routes[f"/good/{stem}.gz"]


@pytest.mark.parametrize("bad", ["broken", "missing"], ids=["500", "404"])
def test_server_error_falls_through_to_next_mirror(server, published, bad):
    loaded = datasets.load("mnist", mirrors=[f"{server.url}/{bad}/", f"{server.url}/good/"], progress=False)
    assert_matches(loaded, published)
    assert server.requests[:2] == [f"/{bad}/{TRAIN_IMAGES}.gz", f"/good/{TRAIN_IMAGES}.gz"]


def test_default_mirrors_are_tried_in_order(server, published, monkeypatch):
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (f"{server.url}/broken", f"{server.url}/good/"))
    assert_matches(datasets.load("mnist", progress=False), published)
    assert server.requests == [
        f"/{mirror}/{stem}.gz" for stem in datasets.IDX_FILES for mirror in ("broken", "good")
    ]


def test_all_mirrors_failing_names_each_url(isolated, server, published):
    mirrors = [f"{server.url}/broken/", f"{server.url}/missing/"]
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load("mnist", mirrors=mirrors, progress=False)
    error = info.value
    urls = [f"{m}{TRAIN_IMAGES}.gz" for m in mirrors]
    assert [url for url, _ in error.failures] == urls
    message = str(error)
    assert f"{urls[0]}: HTTP error 500" in message
    assert f"{urls[1]}: HTTP error 404" in message
    assert str(cache_dir(isolated)) in message  # also lists the places searched
    assert list(cache_dir(isolated).iterdir()) == []


def unused_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_offline_error_names_places_urls_and_fixes(isolated, name):
    # Nothing listens on the port once the probe socket is closed: the connection is refused.
    mirror = f"http://127.0.0.1:{unused_local_port()}/data/"
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load(name, mirrors=[mirror], progress=False)
    message = str(info.value)
    cache = isolated / "xdg-cache" / "mlp" / name
    assert f"Downloading into {cache} failed:" in message
    assert f"{mirror}{TRAIN_IMAGES}.gz: connection failed" in message
    assert str(isolated / "system" / name) in message
    assert "MLP_DATA_DIR" in message and "data_dir=" in message and "mirrors=" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")


def test_timeout_is_reported(server, published, monkeypatch):
    monkeypatch.setattr(datasets, "DOWNLOAD_TIMEOUT_S", 0.2)
    expected = rf"/slow/{TRAIN_IMAGES}\.gz: timed out after 0\.2 s"
    with pytest.raises(datasets.DatasetNotFoundError, match=expected):
        datasets.load("mnist", mirrors=[f"{server.url}/slow/"], progress=False)


def test_no_download_when_download_is_false(server, published):
    with pytest.raises(datasets.DatasetNotFoundError, match="download=True"):
        datasets.load("mnist", download=False, mirrors=[f"{server.url}/good/"])
    assert server.requests == []


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_and_messages(server, published, capsys, progress):
    """With progress, pooch's bar goes to stderr and its log names each download; without, both are silent."""
    import pooch

    logger = pooch.get_logger()
    filters = list(logger.filters)
    records = Records()
    logger.addHandler(records)
    try:
        datasets.load("mnist", mirrors=[f"{server.url}/good/"], progress=progress)
    finally:
        logger.removeHandler(records)
    err = capsys.readouterr().err
    assert ("100%" in err) == progress
    named = [stem for stem in datasets.IDX_FILES if any(f"{stem}.gz" in m for m in records.messages)]
    assert named == (list(datasets.IDX_FILES) if progress else [])
    assert logger.filters == filters


# --------------------------------------------------------------------------
# The real Fashion-MNIST from Debian's dataset-fashion-mnist
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_real_fashion_mnist_from_debian_folder(monkeypatch):
    folders = REAL_SYSTEM_DIRS.get("fashion-mnist", ())
    if not any(all((Path(f) / f"{s}.gz").is_file() or (Path(f) / s).is_file() for s in datasets.IDX_FILES)
               for f in folders):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.setitem(datasets.SYSTEM_DIRS, "fashion-mnist", folders)
    (X, y), (X_test, y_test) = datasets.load("fashion-mnist", download=False)
    for X_, y_, n in ((X, y, 60000), (X_test, y_test, 10000)):
        assert X_.shape == (n, 784) and X_.dtype == np.float32 and X_.flags.c_contiguous
        assert y_.shape == (n,) and y_.dtype == np.int64
        assert X_.min() == 0.0 and X_.max() == 1.0
        # Every value is a whole number of 1/255 steps.
        steps = X_[:1000] * 255
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
        np.testing.assert_array_equal(np.bincount(y_, minlength=10), np.full(10, n // 10))
    assert y[0] == 9 and y_test[0] == 9  # the first image of each split is an ankle boot
