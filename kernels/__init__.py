"""Hand-written Numba CUDA kernels behind ``mlp.backends.cuda_backend``.

Each module holds kernels (built per dtype by factory functions), their
launchers, and names the NumPy twin it must agree with; ``tests/test_kernels.py``
checks every one against that twin, on a GPU or under Numba's CUDA simulator.

================  ==============================================================
module            kernels and their NumPy twin (``mlp.backends.numpy_backend``)
================  ==============================================================
``gemm``          tiled matrix product with fused epilogues: affine forward
                  (bias + activation), backward dx (the activation's derivative
                  applied on load) and dW with db; the activations (identity,
                  relu, tanh, logistic) are device functions in
                  ``activations`` -- twins ``NumpyBackend._affine_forward`` /
                  ``_affine_backward``
``gemm_stacked``  a stack's (M networks of one shape) affine products: forward,
                  dx, dW with db, one launch per product for every model, the
                  model index a grid dimension -- twins ``_affine_forward`` /
                  ``_affine_backward``, model by model on each model's rows
``activations``   identity, relu, tanh, logistic and their derivatives from
                  the output, device functions inlined into the products --
                  twins ``_cpu_loops.bias_act_inplace`` / ``act_grad_colsum``
``softmax``       softmax + cross-entropy (loss, hits, non-finite step, gradient)
                  and plain softmax -- twins ``_softmax_xent`` / ``_softmax``
``losses``        logistic cross-entropy, squared error and Poisson deviance,
                  each fused with its gradient; the L2 term -- twins
                  ``_logistic_xent`` / ``_squared_error`` / ``_poisson_loss``
                  / ``_l2_penalty``
``optim``         SGD (momentum, Nesterov), RMSprop, Adam and AdamW steps over a
                  flat parameter buffer -- twins ``_sgd_step`` / ``_rmsprop_step``
                  / ``_adam_step``
``stacked``       a stack's loss, L2 term, SGD and Adam updates, statistics
                  reset and gather, one launch per operation, the model index
                  a grid dimension -- twins ``_loss_stacked`` /
                  ``_l2_penalty_stacked`` / ``_sgd_step_stacked`` /
                  ``_adam_step_stacked`` / ``_fill_stacked_stats`` /
                  ``_take_rows_stacked``
``gather``        mini-batch row gather -- twin ``_take_rows``
``sparse``        a batch of sparse (CSR) rows scattered into a dense buffer,
                  the first layer's input for sparse X -- twin
                  ``_cpu_sparse.densify_rows``
``fill``          fill, dtype-converting copy, ``stats`` reset -- twins
                  ``_fill`` / ``_copy`` / ``_fill_stats``
``_config``       compile options, simulator detection, SM count
``_launch``       configured-launch cache, placeholder arrays, grid sizing
================  ==============================================================

``_compile_cache`` is the decorator every compiled function goes through
(these kernels and the NumPy backend's loops): Numba's disk cache where it
can write, compilation in memory with one warning where it cannot.

Every launcher returns the number of kernel launches it made, which the
backend adds to its ``launch_count``.  This package never imports ``mlp``:
data flows from the library down into the kernels only.
"""
