"""Optimizer scalars read from a device table: the same updates as the host formulas and as PyTorch.

Every update kernel reads its learning rate, momentum, Adam's step size and
bias correction, ... from one row of a small table in device memory, which
the optimizers write once per epoch (``OptimizerGroup.stage``).  That is what lets
a captured CUDA graph replay an epoch with the right constants.  These tests
drive that path directly, on the CUDA backend (a GPU, or Numba's CUDA
simulator) and on the NumPy backend, and compare every step with formulas
written out here from ``torch.optim``'s documentation, and with PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mlp
from mlp import optim

N_PARAMS, N_DECAY, STEPS = 37, 23, 5  # awkward sizes: decay on a prefix that is not a multiple of anything


def _backend(name):
    try:
        return mlp.get_backend(name)
    except RuntimeError as exc:
        pytest.skip(str(exc))


def _reference_step(name, cfg, p, g, state, t):
    """One update of optimizer ``name`` in float64 with the scalars computed here, on the host, at step t."""
    lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    d = g.copy()
    if name == "adamw":
        p = p.copy()
        p[:N_DECAY] *= 1 - lr * wd
    elif wd:
        d[:N_DECAY] += wd * p[:N_DECAY]
    if name == "sgd":
        mom = cfg["momentum"]
        state["buf"] = mom * state["buf"] + d if t > 1 else d.copy()
        d = d + mom * state["buf"] if cfg.get("nesterov") else state["buf"]
        return p - lr * d
    if name == "rmsprop":
        a = cfg["alpha"]
        state["sq"] = a * state["sq"] + (1 - a) * d * d
        avg = np.sqrt(state["sq"]) + cfg["eps"]
        if cfg["momentum"]:
            state["buf"] = cfg["momentum"] * state["buf"] + d / avg
            return p - lr * state["buf"]
        return p - lr * d / avg
    b1, b2 = cfg["betas"]
    state["m"] = b1 * state["m"] + (1 - b1) * d
    state["v"] = b2 * state["v"] + (1 - b2) * d * d
    step_size = lr / (1 - b1**t)
    return p - step_size * state["m"] / (np.sqrt(state["v"]) / math.sqrt(1 - b2**t) + cfg["eps"])


CASES = {
    "sgd": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "rmsprop": dict(lr=1e-2, alpha=0.9, eps=1e-8, momentum=0.5, weight_decay=1e-2),
    "adam": dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=1e-2),
    "adamw": dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
}


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(N_PARAMS)
    grads = [rng.standard_normal(N_PARAMS) for _ in range(2 * STEPS)]
    return p0, grads


def _run_staged(be, opt, p0, grads, lrs):
    """Two 'epochs' of STEPS updates each, each epoch's scalars staged once; the lr may change between them.

    Returns the parameters after every update and the table of each epoch.
    """
    params = be.asarray(p0.reshape(1, -1).copy(), dtype=np.float64)  # the NumPy backend would use p0 itself
    g = be.empty((1, N_PARAMS), np.float64)
    group = optim.OptimizerGroup([opt], be, params)
    seen, tables = [], []
    for epoch, lr in enumerate(lrs):
        opt.lr = lr
        table = group.stage(STEPS)
        tables.append(table)
        for i in range(STEPS):
            be.copy_(g, grads[epoch * STEPS + i].reshape(1, -1))
            group.launch(params, g, N_DECAY, i)
            seen.append(be.to_numpy(params)[0].copy())
        group.advance([0], STEPS)
    return seen, tables


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["numpy", "cuda"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_staged_scalars_match_the_host_formulas_step_by_step(backend, name):
    be = _backend(backend)
    cfg = CASES[name]
    p0, grads = _inputs()
    lrs = (cfg["lr"], cfg["lr"] * 0.3)  # a changed learning rate must take effect at the next stage
    opt = optim.make_optimizer(name, **cfg)
    seen, tables = _run_staged(be, opt, p0, grads, lrs)
    # The second epoch rewrote the same device buffer: a captured update keeps pointing at valid scalars.
    assert tables[0] is tables[1]
    assert opt.steps == 2 * STEPS
    state = {k: np.zeros(N_PARAMS) for k in ("buf", "sq", "m", "v")}
    p = p0.copy()
    for t in range(1, 2 * STEPS + 1):
        p = _reference_step(name, {**cfg, "lr": lrs[(t - 1) // STEPS]}, p, grads[t - 1], state, t)
        # float64 throughout; the kernels may fuse a multiply-add (one rounding less) on a GPU
        np.testing.assert_allclose(seen[t - 1], p, rtol=1e-12, atol=1e-14, err_msg=f"{name}, step {t}")


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_staged_scalars_match_pytorch_step_by_step(torch, name):
    be = _backend("cuda")
    cfg = dict(CASES[name])
    p0, grads = _inputs(seed=1)
    opt = optim.make_optimizer(name, **cfg)
    seen, _ = _run_staged(be, opt, p0, grads, (cfg["lr"], cfg["lr"]))
    wd = cfg.pop("weight_decay")
    w = torch.tensor(p0[:N_DECAY].copy(), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(p0[N_DECAY:].copy(), dtype=torch.float64, requires_grad=True)
    groups = [{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}]
    theirs = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
              "adamw": torch.optim.AdamW}[name](groups, **cfg)
    for t in range(2 * STEPS):
        w.grad = torch.from_numpy(grads[t][:N_DECAY].copy())
        b.grad = torch.from_numpy(grads[t][N_DECAY:].copy())
        theirs.step()
        ref = np.concatenate([w.detach().numpy(), b.detach().numpy()])
        np.testing.assert_allclose(seen[t], ref, rtol=1e-12, atol=1e-14, err_msg=f"{name}, step {t + 1}")


@pytest.mark.gpu
def test_public_step_and_staged_epoch_agree_bit_for_bit():
    """``Optimizer.step`` (one staged row per call) and a staged epoch produce the same bits."""
    be = _backend("cuda")
    p0, grads = _inputs(seed=2)
    results = []
    for staged in (False, True):
        opt = optim.Adam(lr=3e-3, weight_decay=1e-3)
        params = be.asarray(p0.astype(np.float32).reshape(1, -1), dtype=np.float32)
        g = be.empty((1, N_PARAMS), np.float32)
        if staged:
            group = optim.OptimizerGroup([opt], be, params)
            group.stage(STEPS)
        for i in range(STEPS):
            be.copy_(g, grads[i].astype(np.float32).reshape(1, -1))
            if staged:
                group.launch(params, g, N_DECAY, i)
            else:
                opt.step(be, params[0], g[0], N_DECAY)
        results.append(be.to_numpy(params)[0])
    np.testing.assert_array_equal(results[0], results[1])
