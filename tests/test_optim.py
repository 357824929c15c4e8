"""Optimizers: the same parameters as PyTorch after 20 steps from the same start and batches."""

from __future__ import annotations

import numpy as np
import pytest

import mlp
from mlp import optim

STEPS, BATCH = 20, 16


def _data(n_features: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((STEPS * BATCH, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, STEPS * BATCH).astype(np.int64)
    return X, y


def _train_mlp(layers, opt, dtype, X, y):
    model = mlp.MLP(layers, seed=3, dtype=dtype)
    start = model.get_weights()
    trainer = mlp.Trainer(model, opt, backend="numpy", batch_size=BATCH)
    trainer.fit(X, y, epochs=1, shuffle=False, verbose=0)
    assert opt.steps == STEPS
    return start, model.get_weights()


def _train_torch(torch, start, make_opt, weight_decay, dtype, X, y):
    tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    layers = []
    for W, b in start:
        lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
    weights = [lin.weight for lin in layers]
    biases = [lin.bias for lin in layers]
    # the classic L2 formulation: decay on weights, never on biases
    opt = make_opt([{"params": weights, "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}])
    Xt, yt = torch.from_numpy(X.astype(dtype)), torch.from_numpy(y)
    for s in range(STEPS):
        xb, yb = Xt[s * BATCH:(s + 1) * BATCH], yt[s * BATCH:(s + 1) * BATCH]
        h = xb
        for i, lin in enumerate(layers):
            h = lin(h)
            if i < len(layers) - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [(lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy()) for lin in layers]


CASES = {
    "sgd-momentum-wd": (lambda: optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
                        lambda t, g: t.optim.SGD(g, lr=0.05, momentum=0.9), 1e-3),
    "sgd-nesterov-wd": (lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
                        lambda t, g: t.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True), 5e-4),
    "sgd-plain": (lambda: optim.SGD(lr=0.1), lambda t, g: t.optim.SGD(g, lr=0.1), 0.0),
    "adam": (lambda: optim.Adam(lr=1e-3), lambda t, g: t.optim.Adam(g, lr=1e-3), 0.0),
    "adam-wd": (lambda: optim.Adam(lr=2e-3, betas=(0.8, 0.99), weight_decay=1e-2),
                lambda t, g: t.optim.Adam(g, lr=2e-3, betas=(0.8, 0.99)), 1e-2),
    "adamw": (lambda: optim.AdamW(lr=1e-3, weight_decay=0.05),
              lambda t, g: t.optim.AdamW(g, lr=1e-3), 0.05),
    "rmsprop": (lambda: optim.RMSprop(lr=1e-3), lambda t, g: t.optim.RMSprop(g, lr=1e-3), 0.0),
    "rmsprop-momentum-wd": (lambda: optim.RMSprop(lr=1e-3, alpha=0.9, momentum=0.5, weight_decay=1e-3),
                            lambda t, g: t.optim.RMSprop(g, lr=1e-3, alpha=0.9, momentum=0.5), 1e-3),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_pytorch_after_20_steps(torch, case, dtype):
    torch.use_deterministic_algorithms(True)
    make_ours, make_theirs, wd = CASES[case]
    layers = (20, 16, 8, 3)
    X, y = _data(layers[0], layers[-1])
    start, ours = _train_mlp(layers, make_ours(), dtype, X, y)
    theirs = _train_torch(torch, start, lambda g: make_theirs(torch, g), wd, dtype, X, y)
    # Same formulas in the same order: seen agreeing to ~3e-15 (float64) and ~5e-7
    # (float32, where BLAS summation order and fused multiply-adds differ between
    # the libraries) after 20 steps; the bounds leave a margin of ~20x over that.
    tol = 1e-13 if dtype == np.float64 else 1e-5
    moved = 0.0
    for (W, b), (Wt, bt), (W0, b0) in zip(ours, theirs, start):
        moved = max(moved, float(np.abs(W - W0).max()))
        for a, ref in ((W, Wt), (b, bt)):
            err = np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-12)
            assert err < tol, f"relative difference {err:.2e} >= {tol}"
    assert moved > 1e-4  # the parameters did change: the comparison is not vacuous


def test_reference_network_adam_float32_matches_pytorch(torch):
    layers = (784, 512, 256, 10)
    X, y = _data(784, 10, seed=1)
    X = np.abs(X) / 4  # pixel-like inputs
    start, ours = _train_mlp(layers, optim.Adam(lr=1e-3, weight_decay=1e-4), np.float32, X, y)
    theirs = _train_torch(torch, start, lambda g: torch.optim.Adam(g, lr=1e-3), 1e-4, np.float32, X, y)
    for (W, b), (Wt, bt) in zip(ours, theirs):
        # float32 rounding through 20 steps of a 535k-parameter network
        assert np.linalg.norm(W - Wt) / np.linalg.norm(Wt) < 1e-5
        assert np.linalg.norm(b - bt) / max(np.linalg.norm(bt), 1e-12) < 1e-4


def test_weight_decay_never_touches_biases():
    model = mlp.MLP([3, 4, 2], seed=0, dtype="float64")
    be = model.backend
    p = model.params
    g = be.zeros(model.n_params, np.float64)
    before = be.to_numpy(p).copy()
    optim.SGD(lr=0.5, weight_decay=0.1).step(be, p, g, model.n_weights)
    after = be.to_numpy(p)
    np.testing.assert_allclose(after[:model.n_weights], before[:model.n_weights] * (1 - 0.05), rtol=1e-14)
    np.testing.assert_array_equal(after[model.n_weights:], before[model.n_weights:])


def test_optimizer_state_follows_the_model_and_resets():
    opt = optim.Adam(lr=0.1)
    be = mlp.get_backend("numpy")
    p, g = np.ones(5), np.full(5, 0.5)
    opt.step(be, p, g, 5)
    state = opt.state_numpy()
    assert set(state) == {"exp_avg", "exp_avg_sq"}
    np.testing.assert_allclose(state["exp_avg"], 0.05)
    opt.reset()
    assert opt.steps == 0 and opt.state_numpy() == {}


@pytest.mark.parametrize("make, match", [
    (lambda: optim.SGD(lr=0), r"lr: expected a value in \(0.0, inf\], got 0.0"),
    (lambda: optim.SGD(lr=-1), r"lr: expected a value in"),
    (lambda: optim.SGD(lr=0.1, nesterov=True), r"nesterov: Nesterov momentum needs momentum > 0"),
    (lambda: optim.SGD(lr=0.1, momentum=-0.5), r"momentum: expected a value in \[0.0, inf\]"),
    (lambda: optim.Adam(betas=(0.9, 1.0)), r"betas\[1\]: expected a value in \[0.0, 1.0\)"),
    (lambda: optim.Adam(lr=float("nan")), r"lr: expected a finite number"),
    (lambda: optim.RMSprop(alpha=1.5), r"alpha: expected a value in \[0.0, 1.0\]"),
    (lambda: optim.AdamW(weight_decay=-1), r"weight_decay: expected a value in \[0.0, inf\]"),
    (lambda: optim.make_optimizer("lbfgs"), r"optimizer: expected one of \('sgd', 'rmsprop', 'adam', 'adamw'\)"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_hyperparameter_types():
    with pytest.raises(TypeError, match=r"lr: expected a real number, got str '0.1'"):
        optim.SGD(lr="0.1")
    with pytest.raises(TypeError, match=r"betas: expected a pair"):
        optim.Adam(betas=0.9)
    assert repr(optim.SGD(lr=0.1, momentum=0.9)).startswith("SGD(lr=0.1, momentum=0.9")


def test_state_dict_round_trip_continues_identically():
    be = mlp.get_backend("numpy")
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(6) for _ in range(4)]
    p1 = np.ones(6)
    a = optim.Adam(lr=0.1, weight_decay=0.01)
    for g in grads[:2]:
        a.step(be, p1, g, 4)
    saved, p2 = a.state_dict(), p1.copy()
    b = optim.Adam(lr=0.1, weight_decay=0.01)
    b.load_state_dict(saved)
    assert b.steps == 2
    for g in grads[2:]:
        a.step(be, p1, g, 4)
        b.step(be, p2, g, 4)
    np.testing.assert_array_equal(p1, p2)
    with pytest.raises(ValueError, match=r"state_dict\['state'\]: expected buffers among"):
        b.load_state_dict({"steps": 1, "state": {"bogus": np.zeros(6)}})
    with pytest.raises(ValueError, match=r"state_dict: expected a dict with keys 'steps' and 'state'"):
        b.load_state_dict({"state": {}})


def test_pickled_optimizer_resumes_identically():
    import pickle

    be = mlp.get_backend("numpy")
    p1 = np.ones(5)
    a = optim.SGD(lr=0.1, momentum=0.9)
    a.step(be, p1, np.full(5, 0.3), 5)
    b = pickle.loads(pickle.dumps(a))
    p2 = p1.copy()
    a.step(be, p1, np.full(5, -0.2), 5)
    b.step(be, p2, np.full(5, -0.2), 5)
    np.testing.assert_array_equal(p1, p2)
    assert b.steps == 2
