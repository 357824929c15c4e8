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

import importlib.util
import sys
from pathlib import Path

from ._version import __version__


def _alias_source_kernels() -> None:
    """Make ``mlp.kernels`` importable from a source checkout that was never installed.

    Installed (``pip install .`` or ``-e .``), the repository's ``kernels/``
    folder is the subpackage ``mlp.kernels`` (pyproject's ``package-dir``).
    Run straight from a checkout (``PYTHONPATH=.``), it sits beside ``mlp/``
    instead; load it under the same name so every import reads the same.
    """
    if "mlp.kernels" in sys.modules or importlib.util.find_spec("mlp.kernels") is not None:
        return
    src = Path(__file__).resolve().parent.parent / "kernels"
    if not (src / "__init__.py").is_file():
        return
    spec = importlib.util.spec_from_file_location("mlp.kernels", src / "__init__.py",
                                                  submodule_search_locations=[str(src)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mlp.kernels"] = module
    spec.loader.exec_module(module)


_alias_source_kernels()

from . import datasets, optim  # noqa: E402
from .backends import Backend, available_backends, get_backend  # noqa: E402
from .model import MLP, load  # noqa: E402
from .loop import TrainingLoop  # noqa: E402
from .trainer import EarlyStopping, History, Trainer, TrainingDivergedError, evaluate  # noqa: E402

__all__ = [
    "MLP", "Trainer", "TrainingLoop", "evaluate", "History", "EarlyStopping", "TrainingDivergedError", "Backend",
    "get_backend", "available_backends", "load", "optim", "datasets", "__version__",
]  # the estimators (the 'sklearn' extra) are attributes imported on first use, so `import *` never needs it

#: the scikit-learn drop-ins, imported from ``mlp.estimator`` on first use
_ESTIMATORS = ("MLPClassifier", "MLPRegressor")
#: the searches and ensembles that train many networks at once, imported from ``mlp.search`` on first use
_SEARCH = ("GridSearchCV", "RandomizedSearchCV", "MLPEnsembleClassifier", "MLPEnsembleRegressor")


def __getattr__(name):
    if name in _ESTIMATORS:
        from . import estimator

        return getattr(estimator, name)
    if name in _SEARCH:
        from . import search

        return getattr(search, name)
    raise AttributeError(f"module 'mlp' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_ESTIMATORS, *_SEARCH})
