"""Benchmark suites of ``mlp`` and the report built from their results.

``python -m bench`` (from a source checkout) runs the pytest-benchmark suites that
this machine can run and writes a Markdown report with plots; see
``python -m bench --help``.

Suites (collected only when named: the repository's ``pytest`` run never sees them):

* ``bench_kernels.py``: the affine layer forward and backward, softmax with
  cross-entropy, and the limits they are read against (SGEMM, copy bandwidth);
* ``bench_training.py``: one step and one epoch of the reference network, with
  PyTorch and scikit-learn as peers, and the CPU epoch against its matrix
  products alone;
* ``bench_scaling.py``: time per epoch as batch size and width grow.

``report.py`` turns the raw pytest-benchmark JSON into ``report.md`` and plots.
"""
