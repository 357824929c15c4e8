"""The kernels' activation table against the library's.

``mlp.kernels`` never imports the library, so ``kernels/activations.py``
repeats the names and codes of ``mlp.backends.base.ACTIVATIONS``: the
underscored backend operations pass the library's code straight to the
kernels, so the two tables must agree entry by entry.  The kernels with each
activation are checked against their NumPy twins in ``test_kernels.py``
(``test_every_product_with_every_activation_matches_numpy``), the twins
against PyTorch in ``test_backend_numpy.py``.
"""

from __future__ import annotations

from mlp.backends import base


def test_kernel_and_library_tables_agree():
    from mlp.kernels import activations

    assert activations.ACTIVATIONS == base.ACTIVATIONS
    for code, name in enumerate(base.ACTIVATIONS):
        assert getattr(activations, name.upper()) == code == base.activation_code(name)
