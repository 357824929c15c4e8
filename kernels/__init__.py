"""Hand-written Numba CUDA kernels behind ``mlp.backends.cuda_backend``.

Each module holds kernels (built per dtype by factory functions), their
launchers, and names the NumPy twin it must agree with; ``tests/test_kernels.py``
checks every one against that twin, on a GPU or under Numba's CUDA simulator.

=============  ==============================================================
module         kernels and their NumPy twin (``mlp.backends.numpy_backend``)
=============  ==============================================================
``gemm``       tiled matrix product with fused epilogues: affine forward
               (bias + activation), backward dx (the activation's derivative
               applied on load) and dW with db; the activations (identity,
               relu, tanh, logistic) are device functions in
               ``activations`` -- twins ``NumpyBackend._affine_forward`` /
               ``_affine_backward``
``softmax``    softmax + cross-entropy (loss, hits, non-finite step, gradient)
               and plain softmax -- twins ``_softmax_xent`` / ``_softmax``
``optim``      SGD (momentum, Nesterov), RMSprop, Adam and AdamW steps over a
               flat parameter buffer -- twins ``_sgd_step`` / ``_rmsprop_step``
               / ``_adam_step``
``gather``     mini-batch row gather -- twin ``_take_rows``
``fill``       fill, dtype-converting copy, ``stats`` reset -- twins
               ``_fill`` / ``_copy`` / ``_fill_stats``
``_config``    compile options, simulator detection, SM count
``_launch``    configured-launch cache, placeholder arrays, grid sizing
=============  ==============================================================

Every launcher returns the number of kernel launches it made, which the
backend adds to its ``launch_count``.  This package never imports ``mlp``:
data flows from the library down into the kernels only.
"""
