"""Command line: ``mlp train``, ``mlp evaluate`` and ``mlp info``.

``python -m mlp ...`` is the same program.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

import numpy as np

DEFAULT_HIDDEN = (512, 256)


def _positive_int_list(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 512,256; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive integers such as 512,256; got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    from .datasets import NAMES
    from .optim import OPTIMIZERS

    parser = argparse.ArgumentParser(prog="mlp", description="Train and evaluate multilayer perceptrons "
                                     "on the CPU (NumPy) or an NVIDIA GPU (Numba CUDA kernels).")
    parser.add_argument("--version", action="version", version=f"mlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", default="fashion-mnist", choices=NAMES, help="dataset (default: %(default)s)")
        p.add_argument("--data-dir", default=None, help="folder holding the IDX files (searched first)")
        p.add_argument("--no-download", action="store_true", help="never download; fail if no local copy")
        p.add_argument("--backend", default="auto", choices=("auto", "numpy", "cuda"),
                       help="where to compute (default: %(default)s: the GPU when usable, else NumPy)")

    t = sub.add_parser("train", help="train a network and report its test accuracy",
                       description="Train an MLP (default: 784-512-256-10 on Fashion-MNIST with Adam).")
    data_args(t)
    t.add_argument("--layers", "--hidden", dest="hidden", type=_positive_int_list, default=list(DEFAULT_HIDDEN),
                   help="hidden layer sizes, e.g. 512,256 (default: 512,256); the input and output sizes "
                        "come from the dataset")
    t.add_argument("--optimizer", default="adam", choices=tuple(OPTIMIZERS), help="(default: %(default)s)")
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: 1e-3 for adam/adamw/rmsprop, 0.05 for sgd)")
    t.add_argument("--momentum", type=float, default=None,
                   help="momentum for sgd/rmsprop (default: 0.9 for sgd, 0 for rmsprop)")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (default: 0)")
    t.add_argument("--epochs", type=int, default=15, help="(default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    t.add_argument("--validation-split", type=float, default=0.0,
                   help="fraction of the training set held out and evaluated each epoch (default: 0)")
    t.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement of the validation loss")
    t.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    t.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    t.add_argument("-o", "--output", default=None, help="checkpoint file to write (atomically) after each epoch")
    t.add_argument("-q", "--quiet", action="store_true", help="print only the final result")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset's test set")
    e.add_argument("checkpoint", help="file written by 'mlp train --output' or MLP.save")
    data_args(e)
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="show versions and the backends usable on this machine")
    i.set_defaults(func=cmd_info)

    return parser


def _optimizer(args: argparse.Namespace):
    from . import optim

    name = args.optimizer
    lr = args.lr if args.lr is not None else (0.05 if name == "sgd" else 1e-3)
    if name == "sgd":
        momentum = 0.9 if args.momentum is None else args.momentum
        return optim.SGD(lr=lr, momentum=momentum, nesterov=args.nesterov, weight_decay=args.weight_decay)
    if args.nesterov:
        raise ValueError(f"--nesterov: applies to the sgd optimizer only, got --optimizer {name}")
    if name == "rmsprop":
        return optim.RMSprop(lr=lr, momentum=args.momentum or 0.0, weight_decay=args.weight_decay)
    if args.momentum is not None:
        raise ValueError(f"--momentum: applies to sgd and rmsprop only, got --optimizer {name}")
    return optim.make_optimizer(name, lr=lr, weight_decay=args.weight_decay)


def cmd_train(args: argparse.Namespace) -> int:
    import mlp

    (X, y), (X_test, y_test) = mlp.datasets.load(args.dataset, data_dir=args.data_dir,
                                                 download=not args.no_download)
    n_classes = int(max(y.max(), y_test.max())) + 1
    layers = [X.shape[1], *args.hidden, n_classes]
    model = mlp.MLP(layers, seed=args.seed, dtype=args.dtype)
    trainer = mlp.Trainer(model, _optimizer(args), backend=args.backend, batch_size=args.batch_size,
                          seed=args.seed)
    model.to(trainer.backend)  # so that the line below names the backend it trains on
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)
    if not args.quiet:
        print(f"training {model!r} on {args.dataset} ({X.shape[0]} samples) with {trainer.optimizer!r}, "
              f"batch {args.batch_size}, backend {trainer.backend.name}", file=sys.stderr)
    early = mlp.EarlyStopping(patience=args.early_stopping) if args.early_stopping else None
    history = trainer.fit(X, y, epochs=args.epochs, validation_split=args.validation_split,
                          early_stopping=early, verbose=verbose, checkpoint=args.output)
    result = trainer.evaluate(X_test, y_test)
    seconds = sum(history["seconds"])
    print(f"test accuracy {result['accuracy']:.4f}  test loss {result['loss']:.4f}  "
          f"({len(history)} epochs, {seconds:.1f} s, backend {trainer.backend.name})")
    if args.output:
        meta = {"dataset": args.dataset, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
                "epochs": len(history), "optimizer": repr(trainer.optimizer)}
        model.save(args.output, metadata=meta)
        print(f"checkpoint written to {args.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import mlp

    model = mlp.load(args.checkpoint)
    _, (X_test, y_test) = mlp.datasets.load(args.dataset, data_dir=args.data_dir, download=not args.no_download)
    trainer = mlp.Trainer(model, mlp.optim.SGD(lr=1.0), backend=args.backend)
    result = trainer.evaluate(X_test, y_test)
    print(f"{args.checkpoint}: {args.dataset} test accuracy {result['accuracy']:.4f}  "
          f"test loss {result['loss']:.4f}  ({X_test.shape[0]} samples, backend {trainer.backend.name})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numba

    import mlp
    from .backends import cuda_status

    usable, reason = cuda_status()
    print(f"mlp {mlp.__version__}  Python {platform.python_version()}  NumPy {np.__version__}  "
          f"Numba {numba.__version__}")
    print(f"backends usable here: {', '.join(mlp.available_backends())}")
    print(f"CUDA: {'usable' if usable else 'not usable'}: {reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, FloatingPointError) as exc:
        print(f"mlp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
