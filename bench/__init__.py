"""Benchmark suites of ``mlp`` and the report built from their results: one harness, ``python -m bench``.

``python -m bench`` (from a source checkout) runs the pytest-benchmark suites that
this machine can run and writes a Markdown report with plots; see
``python -m bench --help``.  ``python -m bench --session`` runs the suites a GPU
shows as the parts of one session in a wall-clock budget (:mod:`bench.session`).

Suites (collected only when named: the repository's ``pytest`` run never sees them):

* ``bench_kernels.py``: the affine layer forward and backward, softmax with
  cross-entropy, and the limits they are read against (SGEMM, copy bandwidth);
* ``bench_training.py``: one step and one epoch of the reference network, with
  PyTorch and scikit-learn as peers, the CPU epoch against its matrix
  products alone, and the epochs within one ``fit``;
* ``bench_scaling.py``: time per epoch as batch size and width grow;
* ``bench_launch.py``: the host cost of a kernel launch;
* ``bench_sklearn.py``: the drop-ins' ``fit`` against scikit-learn's;
* ``bench_search.py``: grid searches on digits against scikit-learn's, and
  against their matrix products alone;
* ``bench_stacks.py``: many networks at once on a device (a search, a stack
  against ``torch.func``, hidden sizes grouped against padded);
* ``bench_coldstart.py``: a new process importing the library and fitting once;
* ``bench_predict.py``: prediction's per-call buffers and checks;
* ``bench_sparse.py``: ``fit`` on sparse ``X`` against scikit-learn's.

``report.py`` turns the raw pytest-benchmark JSON into ``report.md`` and plots;
``tune_gemm.py`` measures the tile table ``kernels/gemm_plan.py`` reads;
``profile_epoch.py`` times every operation of a NumPy-backend epoch.
"""
