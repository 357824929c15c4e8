"""Command line: ``mlp train``, ``mlp evaluate`` and ``mlp info``.

``python -m mlp ...`` is the same program.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_HIDDEN = (512, 256)
DEFAULT_DATASET = "fashion-mnist"

#: the options of ``mlp train`` that define a run, with their defaults.  They are
#: recorded in its checkpoints (metadata "run"), and ``--resume`` takes them from there.  The optimizer's
#: settings left at None come from :data:`mlp.optim.DEFAULTS`.
RUN_DEFAULTS = {
    "dataset": DEFAULT_DATASET, "data": None, "hidden": list(DEFAULT_HIDDEN), "activation": "relu",
    "optimizer": "adam", "lr": None, "momentum": None, "nesterov": False, "weight_decay": None, "epochs": 15,
    "batch_size": 128, "validation_split": 0.0, "early_stopping": None, "dtype": "float32", "seed": 0,
}
_FLAGS = {"hidden": "--layers"}  # option strings that are not --<name with dashes>


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _positive_int_list(text: str) -> list[int]:
    # comma-separated (spaces around the commas allowed), or separated by spaces alone; an empty entry is a typo
    parts = [p.strip() for p in text.split(",")] if "," in text else text.split()
    try:
        sizes = [int(s) for s in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 512,256; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive integers such as 512,256; got {text!r}")
    return sizes


def _optimizer_defaults(option: str) -> str:
    """The defaults of one optimizer setting, from :data:`mlp.optim.DEFAULTS`: "0.05 for sgd, 0.001 for adam/..."."""
    from .optim import DEFAULTS

    names_by_value: dict = {}
    for name, settings in DEFAULTS.items():
        if option in settings:
            names_by_value.setdefault(settings[option], []).append(name)
    return ", ".join(f"{value:g} for {'/'.join(names)}" for value, names in names_by_value.items())


def build_parser() -> argparse.ArgumentParser:
    from ._validation import FLOAT_DTYPE_NAMES
    from ._version import __version__
    from .backends import backend_names
    from .backends.base import ACTIVATIONS
    from .datasets import NAMES
    from .optim import OPTIMIZERS

    parser = argparse.ArgumentParser(prog="mlp", description="Train and evaluate multilayer perceptrons "
                                     "on the CPU (NumPy) or an NVIDIA GPU (Numba CUDA kernels).")
    parser.add_argument("--version", action="version", version=f"mlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_args(p: argparse.ArgumentParser, data_help: str) -> None:
        source = p.add_mutually_exclusive_group()
        source.add_argument("--dataset", default=None, choices=NAMES,
                            help=f"a named dataset (default: {DEFAULT_DATASET})")
        source.add_argument("--data", default=None, metavar="FILE.npz", help=data_help)
        p.add_argument("--data-dir", default=None, help="folder holding the IDX files (searched first)")
        p.add_argument("--no-download", action="store_true", help="never download; fail if no local copy")
        p.add_argument("--backend", default="auto", choices=backend_names(),
                       help="where to compute (default: %(default)s: the GPU when usable, else NumPy)")

    # The options that define a run default to None here, so that --resume can
    # tell which ones were given; RUN_DEFAULTS fills in the others.
    d = RUN_DEFAULTS
    t = sub.add_parser("train", help="train a network and report how it does on the test set",
                       description="Train an MLP (default: 784-512-256-10 on Fashion-MNIST with Adam).")
    data_args(t, "your own arrays: an .npz file with X_train (n, features) and y_train, and optionally X_test "
                 "and y_test (of y_train's kind).  The dtype of y_train decides the task: integer or bool y_train "
                 "(n,) trains a classifier (its labels number the classes 0..K-1, and at least half of the "
                 "classes 0..K-1 must occur); floating y_train trains a regression, whatever its values, as does "
                 "any (n, targets) y_train (identity outputs, squared error).  The input and output sizes come "
                 "from the data")
    t.add_argument("--layers", "--hidden", dest="hidden", type=_positive_int_list, default=None,
                   help="hidden layer sizes, e.g. 512,256 (default: 512,256); the input and output sizes "
                        "come from the dataset")
    t.add_argument("--activation", default=None, choices=ACTIVATIONS,
                   help=f"of the hidden layers (default: {d['activation']})")
    t.add_argument("--optimizer", default=None, choices=tuple(OPTIMIZERS), help=f"(default: {d['optimizer']})")
    t.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default: {_optimizer_defaults('lr')})")
    t.add_argument("--momentum", type=float, default=None,
                   help=f"momentum (default: {_optimizer_defaults('momentum')})")
    t.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (sgd)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help=f"L2 weight decay (default: {_optimizer_defaults('weight_decay')})")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"total number of epochs, also when resuming (default: {d['epochs']})")
    t.add_argument("--batch-size", type=int, default=None, help=f"(default: {d['batch_size']})")
    t.add_argument("--validation-split", type=float, default=None,
                   help="fraction of the training set held out and evaluated each epoch (default: 0)")
    t.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement of the validation loss")
    t.add_argument("--dtype", default=None, choices=FLOAT_DTYPE_NAMES, help=f"(default: {d['dtype']})")
    t.add_argument("--seed", type=int, default=None, help=f"(default: {d['seed']})")
    t.add_argument("-o", "--output", default=None,
                   help="checkpoint file to write (atomically) after each epoch; --resume continues from it")
    t.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run saved in CKPT (by -o) exactly where it stopped, up to --epochs in all; "
                        "the other options come from CKPT (and -o defaults to CKPT); --plot does not: give it "
                        "again to draw the curves")
    t.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw the curves of the loss and, for a classifier, the accuracy or, for a regression, "
                        "R², to FILE after each epoch (needs matplotlib)")
    t.add_argument("-q", "--quiet", action="store_true", help="print only the final result")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset's test set (accuracy and loss, or for "
                                        "a regression the loss and R²)")
    e.add_argument("checkpoint", help="file written by 'mlp train --output' or MLP.save")
    data_args(e, "an .npz file with X_test and y_test to evaluate on, y_test of the model's kind (read as by "
                 "'mlp train --data': integer labels for a classifier, floating targets for a regression)")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="show versions and the backends usable on this machine")
    i.set_defaults(func=cmd_info)

    return parser


def _optimizer(run: dict):
    """The optimizer of a run's settings, those left out (None) from :data:`mlp.optim.DEFAULTS`; records the
    settings it was made with in ``run``."""
    from . import optim

    name = run["optimizer"]
    defaults = optim.DEFAULTS[name]
    for option in ("momentum", "nesterov"):
        if run[option] not in (None, False) and option not in defaults:
            takers = [other for other, settings in optim.DEFAULTS.items() if option in settings]
            raise ValueError(f"{_flag(option)}: applies to the {' and '.join(takers)} optimizer"
                             f"{'s' if len(takers) > 1 else ''} only, got --optimizer {name}")
    settings = {option: default if run[option] is None else run[option] for option, default in defaults.items()}
    opt = optim.make_optimizer(name, **settings)
    run.update(settings)
    return opt


def _load_data(args: argparse.Namespace, dataset: str | None, data: str | None):
    """``((X, y), (X_test, y_test))`` from a named dataset or an .npz file (test pair None when absent)."""
    from . import datasets

    if data is not None:
        return datasets.load_npz(data)
    return datasets.load(dataset or DEFAULT_DATASET, data_dir=args.data_dir, download=not args.no_download)


def _given_run_options(args: argparse.Namespace) -> dict:
    given = {k: getattr(args, k) for k in RUN_DEFAULTS if getattr(args, k, None) is not None}
    if "data" in given:
        given["data"] = str(Path(given["data"]).resolve())
    return given


def _resumed_run(trainer, path: str, given: dict) -> dict:
    """The settings of the run saved in ``path``; an option given that differs from them is an error."""
    run = _recorded_run(trainer, path)
    for name, value in given.items():
        if name != "epochs" and value != run[name]:
            used = "not set" if run[name] is None else repr(run[name])
            raise ValueError(f"{_flag(name)}: the run in {path!r} used {used}, got {value!r}; leave "
                             f"{_flag(name)} out when resuming (every option but --epochs comes from the checkpoint)")
    done = len(trainer.history)
    epochs = given.get("epochs", run["epochs"])
    if epochs <= done:
        how = f"--epochs {epochs} asks for" if "epochs" in given else f"its run was set to {epochs}, and"
        raise ValueError(f"--epochs: {path!r} has {done} epochs done; {how} no more. Pass --epochs N with "
                         f"N > {done} (the total number of epochs) to train further")
    return {**run, "epochs": epochs}


def _recorded_run(trainer, path: str) -> dict:
    """The options of the run a checkpoint records (its metadata "run"), each checked, and checked against
    what the checkpoint's model and training state hold.  Only those options: nothing else of the
    checkpoint's header is taken up (in particular no file to write)."""
    from ._validation import FLOAT_DTYPE_NAMES, check_int, check_real
    from .backends.base import ACTIVATIONS
    from .optim import OPTIMIZERS

    run = trainer.model.metadata.get("run")
    if isinstance(run, dict):  # runs recorded before --activation existed: the model's (ReLU) is the run's
        run = {"activation": trainer.model.activation, **run}
    if not isinstance(run, dict) or set(RUN_DEFAULTS) - set(run):
        raise ValueError(f"--resume: {path!r} was not written by 'mlp train' (metadata.run does not record the "
                         "dataset and options of its run); continue it from Python with mlp.Trainer.from_checkpoint")
    bad = f"--resume: {path!r} records a malformed run: metadata.run."
    model, state, optimizer = trainer.model, trainer._resume, trainer.optimizer
    checked = {**_recorded_source(run, path, "--resume")}
    try:
        for name in ("epochs", "batch_size"):
            checked[name] = check_int(run[name], bad + name, minimum=1)
        checked["seed"] = check_int(run["seed"], bad + "seed", minimum=0)
        hidden = run["hidden"]
        if not isinstance(hidden, list):
            raise TypeError(f"{bad}hidden: expected a list of layer sizes, got {hidden!r}")
        checked["hidden"] = [check_int(size, f"{bad}hidden[{i}]", minimum=1) for i, size in enumerate(hidden)]
        for name, choices in (("activation", ACTIVATIONS), ("optimizer", tuple(OPTIMIZERS)),
                              ("dtype", FLOAT_DTYPE_NAMES)):
            if not isinstance(run[name], str) or run[name] not in choices:
                raise ValueError(f"{bad}{name}: expected one of {tuple(choices)}, got {run[name]!r}")
            checked[name] = run[name]
        for name in ("lr", "momentum", "weight_decay"):
            checked[name] = None if run[name] is None else check_real(run[name], bad + name)
        if not isinstance(run["nesterov"], bool):
            raise TypeError(f"{bad}nesterov: expected true or false, got {run['nesterov']!r}")
        checked["nesterov"] = run["nesterov"]
        checked["validation_split"] = check_real(run["validation_split"], bad + "validation_split", minimum=0.0,
                                                 maximum=1.0, max_inclusive=False)
        early = run["early_stopping"]
        checked["early_stopping"] = None if early is None else check_int(early, bad + "early_stopping", minimum=1)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    # what the model and the training state hold decides; a record that says otherwise is not this run's
    stopping = state.early_stopping
    holds = {"hidden": list(model.layer_sizes[1:-1]), "activation": model.activation, "dtype": model.dtype.name,
             "optimizer": state.optimizer["name"], "batch_size": trainer.batch_size, "seed": trainer.seed,
             "validation_split": state.validation["fraction"],
             "early_stopping": None if stopping is None else stopping["patience"],
             **{name: value for name, value in optimizer.get_config().items()
                if name in checked and checked[name] is not None}}
    for name, value in holds.items():
        if checked[name] != value:
            raise ValueError(f"{bad}{name}: expected {value!r}, as the checkpoint's model and training state hold, "
                             f"got {checked[name]!r}")
    return checked


def _recorded_source(run, path: str, option: str) -> dict:
    """The dataset or data file a run record names (``dataset`` and ``data``), checked."""
    from .datasets import NAMES

    bad = f"{option}: {path!r} records a malformed run: metadata.run"
    if not isinstance(run, dict):
        raise ValueError(f"{bad}: expected an object, got {type(run).__name__}")
    dataset, data = run.get("dataset"), run.get("data")
    if dataset is not None and (not isinstance(dataset, str) or dataset not in NAMES):
        raise ValueError(f"{bad}.dataset: expected one of {NAMES} or null, got {dataset!r}")
    if data is not None and not isinstance(data, str):
        raise ValueError(f"{bad}.data: expected the path of an .npz file or null, got {data!r}")
    if (dataset is None) == (data is None):
        raise ValueError(f"{bad}: expected a dataset or a data file (one of the two), got dataset={dataset!r} and "
                         f"data={data!r}")
    return {"dataset": dataset, "data": data}


def cmd_train(args: argparse.Namespace) -> int:
    import mlp
    from .plotting import figure_class

    given = _given_run_options(args)
    if args.resume:
        trainer = mlp.Trainer.from_checkpoint(args.resume, backend=args.backend)
        run = _resumed_run(trainer, args.resume, given)
        (X, y), (X_test, y_test) = _load_data(args, run["dataset"], run["data"])
        model = trainer.model
        for name, labels in (("y_train", y), ("y_test", y_test)):
            _check_kind(model, labels, name, run["data"] or run["dataset"], "--resume", args.resume)
        output = args.output or args.resume  # a file the user named, as --plot: never one the checkpoint names
    else:
        run = {**RUN_DEFAULTS, **given}
        if run["data"] is not None:
            run["dataset"] = None
        (X, y), (X_test, y_test) = _load_data(args, run["dataset"], run["data"])
        if y.dtype.kind == "f":  # real-valued targets (see mlp.datasets.load_npz): a regression
            last_layer, n_outputs = "identity", 1 if y.ndim == 1 else y.shape[1]
        else:
            last_layer, n_outputs = "softmax", int(max(y.max(), y_test.max() if y_test is not None else 0)) + 1
            if n_outputs < 2:
                raise ValueError("y_train: every label is 0; a classifier needs at least two classes (labels 0 and 1)")
        _check_validation(run, X.shape[0])
        model = mlp.MLP([X.shape[1], *run["hidden"], n_outputs], seed=run["seed"], dtype=run["dtype"],
                        activation=run["activation"], output=last_layer)
        trainer = mlp.Trainer(model, _optimizer(run), backend=args.backend, batch_size=run["batch_size"],
                              seed=run["seed"])
        output = args.output
    plot = args.plot
    if plot is not None:
        figure_class()  # fail now, not after the first epoch, when matplotlib is missing
    model.metadata = {"run": run}
    source = run["data"] or run["dataset"]
    start_epoch = len(trainer.history) if args.resume else 0
    model.to(trainer.backend)  # so that the line below names the backend it trains on
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)
    if not args.quiet:
        start = f"resuming from {args.resume} after epoch {start_epoch}: " if args.resume else ""
        print(f"{start}training {model!r} on {source} ({X.shape[0]} samples) with {trainer.optimizer!r}, "
              f"batch {trainer.batch_size}, backend {trainer.backend.name}", file=sys.stderr)
    early = mlp.EarlyStopping(patience=run["early_stopping"]) if run["early_stopping"] else None
    draw = (lambda history: history.plot(plot)) if plot is not None else None
    try:
        history = trainer.fit(X, y, epochs=run["epochs"], validation_split=run["validation_split"],
                              early_stopping=early, verbose=verbose, checkpoint=output, on_epoch_end=draw)
    except KeyboardInterrupt:
        _print_how_to_resume(trainer, output, args.resume, start_epoch)
        return 130
    seconds = sum(history["seconds"])
    done = f"{len(history)} epochs, {seconds:.1f} s, backend {trainer.backend.name}"
    if X_test is not None:
        figures = _figures(model, trainer.evaluate(X_test, y_test))
        model.metadata.update({f"test_{name}": value for name, value in figures.items()})
        print(f"{_report('test', figures)}  ({done})")
    else:  # the final model on the training data
        figures = _figures(model, trainer.evaluate(X, y))
        print(f"{_report('training', figures)}  ({done}; no X_test/y_test in {source} to test on)")
    if output:
        trainer.save_checkpoint(output)
        print(f"checkpoint written to {output}")
    if plot is not None:  # drawn after every epoch, the last included
        print(f"curves drawn to {plot}")
    return 0


def _check_validation(run: dict, n_samples: int) -> None:
    """Refuse, before a run starts, a validation split that leaves no sample on one side and early stopping
    without the validation loss it watches (mlp.Trainer.fit would, once the run's header is printed)."""
    from .trainer import validation_count

    if run["validation_split"]:
        validation_count(n_samples, run["validation_split"], "--validation-split")
    elif run["early_stopping"] is not None:
        raise ValueError("--early-stopping: watches the validation loss; give --validation-split too "
                         "(the fraction of the training set held out to compute it)")


def _print_how_to_resume(trainer, output: str | None, resumed_from: str | None, start: int) -> None:
    """Say where the run can continue from: the checkpoint this run wrote last, or the one it resumed."""
    done = len(trainer.history) if trainer.history is not None else 0
    if output and done > start:
        hint = f"{output} holds epoch {done}; continue with: mlp train --resume {output}"
    elif resumed_from:
        hint = f"continue with: mlp train --resume {resumed_from}"
    elif output:
        hint = f"no epoch was complete, so nothing was written to {output}"
    else:
        hint = "no checkpoint was written; pass -o FILE next time to be able to resume"
    print(f"interrupted: {hint}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import mlp

    model = mlp.load(args.checkpoint)
    data, dataset = args.data, args.dataset
    if data is None and dataset is None and "run" in model.metadata:  # the test set of the run's data
        source = _recorded_source(model.metadata["run"], args.checkpoint, "checkpoint")
        data, dataset = source["data"], source["dataset"]
    _, (X_test, y_test) = _load_data(args, dataset, data)
    if X_test is None:
        raise ValueError(f"--data: {data!r} holds no X_test and y_test to evaluate on")
    option = "--data" if data is not None else "--dataset"
    _check_kind(model, y_test, "y_test", data or dataset or DEFAULT_DATASET, option, args.checkpoint)
    figures = _figures(model, mlp.evaluate(model, X_test, y_test, backend=args.backend))
    print(f"{args.checkpoint}: {data or dataset or DEFAULT_DATASET} {_report('test', figures)}  "
          f"({X_test.shape[0]} samples, backend {model.backend.name})")
    return 0


def _check_kind(model, y, name: str, source: str, option: str, path: str) -> None:
    """Refuse data whose kind differs from the model's: integer class labels (a 1-D integer ``y``, as
    :func:`mlp.datasets.load_npz` and the named datasets give them) for a softmax output, real-valued targets
    otherwise."""
    if y is None:
        return
    labels = y.ndim == 1 and y.dtype.kind in "biu"
    if labels == model.uses_labels:
        return
    n = model.n_outputs
    if model.uses_labels:
        model_kind = f"a classifier (softmax output, {n} classes)"
    elif model.output == "logistic":
        model_kind = f"a classifier of 0/1 targets (logistic output, {n} output{'s' if n > 1 else ''})"
    else:
        model_kind = f"a regression ({model.output} output, {n} target{'s' if n > 1 else ''})"
    data_kind = "integer class labels" if labels else \
        f"regression targets ({'floating dtype' if y.ndim == 1 else f'{y.shape[1]} columns'})"
    raise ValueError(f"{option}: {name} of {source} holds {data_kind}, but the model in {path!r} is {model_kind}; "
                     "give data of the model's kind (the dtype of y decides: integer or bool for class labels, "
                     "floating for regression targets)")


def _figures(model, result: dict[str, float]) -> dict[str, float]:
    """What the reports show of :func:`mlp.evaluate`'s result: accuracy and loss for a classifier, loss
    (half the mean squared error for an identity output) and R² for a regression."""
    from .evaluation import has_accuracy

    keys = ("accuracy", "loss") if has_accuracy(model) else ("loss", "r2")
    return {key: result[key] for key in keys}


def _report(where: str, figures: dict[str, float]) -> str:
    names = {"accuracy": "accuracy", "loss": "loss", "r2": "R²"}
    return "  ".join(f"{where} {names[key]} {value:.4f}" for key, value in figures.items())


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import mlp
    from .backends import backend_names, backend_status, compiler_versions

    compilers = "  ".join(f"{name} {v}" for name, v in compiler_versions().items())
    print(f"mlp {mlp.__version__}  Python {platform.python_version()}  NumPy {np.__version__}  {compilers}")
    print(f"backends usable here: {', '.join(mlp.available_backends())}")
    for name in backend_names()[:-1]:  # every registered backend, "auto" aside
        status = backend_status(name)
        print(f"  {name}: {'usable' if status.usable else 'not usable'}: {status.reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "early_stopping"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"{_flag(name)}: expected a positive integer, got {value}")
    split = getattr(args, "validation_split", None)
    if split is not None and not 0.0 <= split < 1.0:  # NaN included
        parser.error(f"--validation-split: expected a fraction in [0, 1), got {split}")
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError, ImportError) as exc:
        print(f"mlp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
