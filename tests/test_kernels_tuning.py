"""The per-device tuning table of the matrix products and the pure parts of ``bench/tune_gemm.py``.

No kernel runs here: loading, normalising and looking up tables, ``plan``
taking a table entry over its heuristic, and the tuner's candidate lists.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlp.backends import cuda_status

_usable, _why = cuda_status()
if not _usable:
    pytest.skip(f"CUDA backend unavailable: {_why}", allow_module_level=True)

from bench import tune_gemm  # noqa: E402
from mlp.kernels import _tuning, gemm_plan  # noqa: E402

ENTRY = {"variant": "forward", "dtype": "float32", "m": 128, "n": 512, "k": 784, "config": "64x64", "split_k": 3}


@pytest.mark.parametrize("name,kind", [("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
                                       (b"NVIDIA H200", "nvidia-h200"),
                                       ("  Tesla V100-SXM2-16GB ", "tesla-v100-sxm2-16gb")])
def test_device_names_normalise_to_file_stems(name, kind):
    assert _tuning.device_kind(name) == kind
    assert _tuning.table_path(name).name == kind + ".json"


def test_table_round_trips_through_a_file(tmp_path):
    doc = _tuning.document("NVIDIA H100 80GB HBM3", [ENTRY], [{"impl": "cublas", "seconds": 1e-5}])
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    table = _tuning.load_table(path, gemm_plan.TILES)
    assert table == {("forward", "float32", 128, 512, 784): ("64x64", 3)}
    assert _tuning.load_table(tmp_path / "absent.json", gemm_plan.TILES) == {}


@pytest.mark.parametrize("change,message", [({"config": "256x256"}, "config"), ({"split_k": 0}, "split_k"),
                                            ({"variant": "sideways"}, "variant"), ({"m": None}, "entry 0")])
def test_bad_table_entries_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        _tuning.parse_table({"entries": [{**ENTRY, **change}]}, gemm_plan.TILES)


def test_plan_takes_an_exact_table_entry_over_the_heuristic(monkeypatch):
    monkeypatch.setattr(gemm_plan, "sm_count", lambda: 132)
    monkeypatch.setattr(gemm_plan, "tuning_table", lambda: _tuning.parse_table({"entries": [ENTRY]}, gemm_plan.TILES))
    assert gemm_plan.plan(128, 512, 784, dtype=np.float32) != ("64x64", 3)  # no variant: heuristic
    assert gemm_plan.plan(128, 512, 784, dtype=np.float32, variant="forward") == ("64x64", 3)
    assert gemm_plan.plan(128, 512, 784, dtype=np.float32, variant="dw") != ("64x64", 3)  # another variant
    assert gemm_plan.plan(128, 512, 783, dtype=np.float32, variant="forward") != ("64x64", 3)  # another shape
    assert gemm_plan.plan(128, 512, 784, dtype=np.float64, variant="forward") != ("64x64", 3)  # another dtype
    assert gemm_plan.plan(128, 512, 784, "32x64", None, np.float32, "forward")[0] == "32x64"  # a named tile wins
    assert gemm_plan.plan(128, 512, 784, "auto", 1, np.float32, "forward")[1] == 1  # so does a named split


def test_selectable_kernels_follow_the_heuristic_and_the_table(monkeypatch):
    monkeypatch.setattr(gemm_plan, "tuning_table", lambda: {})
    assert {c for c, _ in gemm_plan.selectable_kernels(np.float64)} == set(gemm_plan.AUTO_TILES["float64"])
    assert gemm_plan.selectable_kernels(np.float32, "64x64") == {("64x64", v) for v in gemm_plan.VARIANTS}
    entry = {**ENTRY, "dtype": "float64", "config": "128x128"}
    monkeypatch.setattr(gemm_plan, "tuning_table", lambda: _tuning.parse_table({"entries": [entry]}, gemm_plan.TILES))
    assert ("128x128", "forward") in gemm_plan.selectable_kernels(np.float64)
    assert ("128x128", "dx") not in gemm_plan.selectable_kernels(np.float64)


def test_tuner_covers_every_product_of_the_reference_network():
    ps = tune_gemm.products()
    assert len(ps) == len(tune_gemm.BATCHES) * (3 * 2 + 2)  # forward and dW per layer, dx for layers 2 and 3
    dw = [p for p in ps if p.variant == "dw" and p.batch == 8192 and p.layer == 2]
    assert [(p.m, p.n, p.k) for p in dw] == [(256, 10, 8192)]  # the batch is dW's K
    assert not [p for p in ps if p.variant == "dx" and p.layer == 0]


def test_tuner_candidates_split_only_while_slices_remain():
    p = tune_gemm.Product("forward", 128, 10, 40, 128, 2, False)  # 40 = 3 slices of 16, 5 of 8
    bk = {"a": 16, "b": 8}
    got = tune_gemm.candidates(p, ("a", "b"), 32, bk.__getitem__)
    assert got == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 4)]
    assert all(s <= 4 for _, s in tune_gemm.candidates(p, ("b",), 4, bk.__getitem__))


def test_tuner_picks_the_fastest_correct_candidate():
    base = dict(variant="dx", dtype="float32", m=8, n=8, k=8)
    rows = [dict(base, impl="mlp", config="64x64", split_k=1, ok=True, seconds=3.0),
            dict(base, impl="mlp", config="32x64", split_k=2, ok=False, seconds=1.0),  # wrong: never chosen
            dict(base, impl="mlp", config="32x64", split_k=1, ok=True, seconds=2.0),
            dict(base, impl="cublas", config=None, split_k=None, ok=True, seconds=0.5)]  # recorded only
    assert tune_gemm.best_entries(rows) == [dict(base, config="32x64", split_k=1)]
