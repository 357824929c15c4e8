"""mlp: multilayer perceptrons trained with hand-written Numba CUDA kernels, with a NumPy fallback.

>>> import mlp
>>> (X, y), (X_test, y_test) = mlp.datasets.load("fashion-mnist")
>>> model = mlp.MLP([784, 512, 256, 10], seed=0)
>>> trainer = mlp.Trainer(model, mlp.optim.Adam(lr=1e-3), backend="auto", batch_size=128)
>>> history = trainer.fit(X, y, epochs=15, validation_split=0.1)
>>> trainer.evaluate(X_test, y_test)["accuracy"]

The same code runs on a GPU (``backend="cuda"``) or the CPU (``"numpy"``);
``"auto"`` picks the GPU when one is usable.
"""

__version__ = "0.1.0"

from . import datasets, optim  # noqa: E402
from .backends import Backend, available_backends, get_backend  # noqa: E402
from .model import MLP, load  # noqa: E402
from .trainer import EarlyStopping, History, Trainer, TrainingDivergedError  # noqa: E402

__all__ = [
    "MLP", "Trainer", "History", "EarlyStopping", "TrainingDivergedError", "Backend",
    "get_backend", "available_backends", "load", "optim", "datasets", "MLPClassifier", "__version__",
]


def __getattr__(name):
    # The scikit-learn style estimator is imported on first use.
    if name == "MLPClassifier":
        from .estimator import MLPClassifier

        return MLPClassifier
    raise AttributeError(f"module 'mlp' has no attribute {name!r}")
