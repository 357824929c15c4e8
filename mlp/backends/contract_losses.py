"""The backend contract, output losses: softmax with cross-entropy and the losses of scikit-learn's
other outputs, each fused with its gradient and accumulated into a ``stats`` array.

Part of :class:`mlp.backends.base.Backend` (a base class of it); the conventions and the ``stats``
slots are those of ``base.py``'s docstring.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from .._validation import check_index_range
from .checks import _describe, check_matrix, check_out, check_same_dtype, check_vector
from .names import INDEX_DTYPE, STATS_SIZE, TARGET_RANGES


class LossOps(ABC):
    """The output losses of the backend contract."""

    # ---------------------------------------------------------------- softmax
    def softmax(self, logits: Any, out: Any = None) -> Any:
        """Row-wise softmax, computed stably (row max subtracted)."""
        check_matrix(logits, "logits")
        self._require_contiguous(logits=logits)
        if out is None:
            out = self.empty(logits.shape, logits.dtype)
        else:
            check_out(out, "out", logits.shape, logits.dtype)
        self._softmax(logits, out)
        return out

    @abstractmethod
    def _softmax(self, logits: Any, out: Any) -> None: ...

    def _check_xent(self, logits: Any, labels: Any) -> tuple[int, int]:
        check_matrix(logits, "logits")
        n, c = logits.shape
        if n == 0:
            raise ValueError("logits: expected at least one row, got an empty batch")
        check_vector(labels, "labels", size=n, dtype=INDEX_DTYPE)
        self._require_contiguous(logits=logits, labels=labels)
        # Reading the labels' range costs a device-to-host copy on a GPU; the
        # trainer checked its labels once per fit and takes the fast path.
        check_index_range(self.to_numpy(labels), c, "labels", "class indices", f"logits has {c} columns")
        return n, c

    def softmax_cross_entropy(
        self, logits: Any, labels: Any, dlogits_out: Any = None, weights: Any = None, clip: bool = False
    ) -> tuple[float, Any]:
        """Mean softmax cross-entropy of a batch (weighted by ``weights`` when given) and its gradient.

        Returns ``(loss, dlogits)`` with ``loss`` a Python float (on a GPU this
        reads the device, a synchronisation: the training loop uses
        :meth:`softmax_cross_entropy_into` instead) and
        ``dlogits = (softmax(logits) - onehot(labels)) / N``.
        """
        n, c = self._check_xent(logits, labels)
        if dlogits_out is None:
            dlogits_out = self.empty((n, c), logits.dtype)
        stats = self.new_stats()
        self.softmax_cross_entropy_into(logits, labels, dlogits_out, stats, weights=weights, clip=clip)
        return float(self.to_numpy(stats)[0]) / n, dlogits_out

    def softmax_cross_entropy_into(
        self, logits: Any, labels: Any, dlogits_out: Any, stats: Any, step: int = 0, weights: Any = None,
        clip: bool = False
    ) -> None:
        """One pass over each row: max, log-sum-exp, loss, gradient and argmax.

        Writes ``(softmax - onehot) / N`` into ``dlogits_out`` (skipped when it
        is ``None``, as in evaluation) and accumulates into ``stats`` (see the
        module docstring); ``step`` is recorded there if a loss is not finite.
        ``weights``: per-sample weights, (N,) of the logits' dtype, finite,
        >= 0, with a positive sum (see the losses section below).
        ``clip``: each row's loss held to scikit-learn's bounds, whose log-loss
        clips the probabilities to ``[eps, 1 - eps]``, so a row's loss lies in
        ``[-log(1 - eps), -log(eps)]`` (:func:`~mlp.backends.names.log_loss_eps`);
        the gradient is the same either way.
        Never synchronises (except to check ``labels`` and ``weights``).
        """
        n, c = self._check_xent(logits, labels)
        if dlogits_out is not None:
            check_out(dlogits_out, "dlogits_out", (n, c), logits.dtype)
        check_vector(stats, "stats", size=STATS_SIZE, dtype=np.float64)
        self._check_weights(weights, n, logits.dtype)
        self._softmax_xent(logits, labels, dlogits_out, stats, int(step), weights, bool(clip))

    @abstractmethod
    def _softmax_xent(self, logits: Any, labels: Any, dlogits: Any, stats: Any, step: int,
                      weights: Any = None, clip: bool = False) -> None: ...

    # ------------------------------------------------------------------ losses
    # The output losses other than softmax, each fused with its gradient with
    # respect to the output layer's pre-activation z, as scikit-learn's MLPs
    # define them.  For a batch of N rows with per-sample weights w (all 1
    # when ``weights`` is None) and S = sum(w):
    #
    # * gradient row i: ``w[i] * (out(z[i]) - t[i]) / S`` (``/ N`` unweighted);
    # * ``stats[STATS_LOSS_SUM] += N * w[i] / S * loss_i`` over the rows (the
    #   plain sum of per-row losses unweighted), so an epoch's loss sum over
    #   its sample count is the batch-size-weighted mean of the batches'
    #   weighted means, scikit-learn's ``loss_curve_``;
    # * ``stats[STATS_CORRECT]``: rows predicted right (softmax: argmax equals
    #   the label; logistic: every column's ``z > 0`` equals ``t > 0.5``;
    #   nothing for the regression losses);
    # * ``stats[STATS_FIRST_NONFINITE_STEP]``: ``step``, if smaller, when a
    #   row's loss is not finite.
    #
    # The underscored methods take ``weights`` None or (N,) of z's dtype and
    # trust them; weights summing to 0 give NaN there.
    def _check_weights(self, weights: Any, n: int, dtype: Any) -> None:
        """Raise unless ``weights`` is None or (n,) of ``dtype``, finite, >= 0, with a positive sum."""
        if weights is None:
            return
        check_vector(weights, "weights", size=n, dtype=dtype)
        self._require_contiguous(weights=weights)
        host = np.asarray(self.to_numpy(weights), dtype=np.float64)
        if not np.isfinite(host).all():
            raise ValueError(f"weights: expected finite values, got {host[~np.isfinite(host)][0]} at index "
                             f"{int(np.flatnonzero(~np.isfinite(host))[0])}")
        if host.min() < 0:
            raise ValueError(f"weights: expected values >= 0, got {host.min()} at index {int(host.argmin())}")
        if not host.sum() > 0:
            raise ValueError("weights: expected a positive sum, got 0 (every weight is 0)")

    def _check_targets(self, z: Any, z_name: str, targets: Any, low: float, high: float) -> tuple[int, int]:
        """Raise unless ``z`` is a non-empty (N, C) float matrix and ``targets`` one like it with values in
        ``[low, high]`` (finite).  Returns ``(N, C)``."""
        check_matrix(z, z_name)
        n, c = z.shape
        if n == 0 or c == 0:
            raise ValueError(f"{z_name}: expected at least one row and one column, got {_describe(z)}")
        check_matrix(targets, "targets", rows=n, cols=c)
        check_same_dtype(z, z_name, targets=targets)
        self._require_contiguous(**{z_name: z, "targets": targets})
        # A device-to-host copy on a GPU; the training loop checks its targets
        # once per fit and takes the underscored fast path.
        host = self.to_numpy(targets)
        if not np.isfinite(host).all():
            raise ValueError("targets: expected finite values, got NaN or inf")
        lo, hi = float(host.min()), float(host.max())
        if lo < low or hi > high:
            raise ValueError(f"targets: expected values in [{low}, {high}], got values in [{lo}, {hi}]")
        return n, c

    def _loss_into(self, op: Callable, z_name: str, z: Any, targets: Any, dz_out: Any, stats: Any, step: int,
                   weights: Any, low: float = -math.inf, high: float = math.inf, **options: Any) -> None:
        n, c = self._check_targets(z, z_name, targets, low, high)
        if dz_out is not None:
            check_out(dz_out, f"d{z_name}_out", (n, c), z.dtype)
        check_vector(stats, "stats", size=STATS_SIZE, dtype=np.float64)
        self._check_weights(weights, n, z.dtype)
        op(z, targets, dz_out, stats, int(step), weights, **options)

    def logistic_cross_entropy_into(
        self, logits: Any, targets: Any, dlogits_out: Any, stats: Any, step: int = 0, weights: Any = None,
        clip: bool = False
    ) -> None:
        """Sigmoid outputs with binary cross-entropy summed over the C columns (binary: C = 1; multilabel).

        logits, targets (values in [0, 1]) and ``dlogits_out`` (or None):
        (N, C), one float dtype.  Per row ``sum_j softplus(z_j) - t_j z_j``,
        computed stably as ``max(z, 0) - t z + log1p(exp(-|z|))``; gradient
        ``w (sigmoid(z) - t) / S``; a hit when every column is right.
        This loss keeps growing linearly in ``|z|``, as the gradient it is
        the loss of does; scikit-learn clips the probabilities to
        ``[eps, 1 - eps]`` before its logarithm, so its loss stops growing
        past ``|z|`` of about 36 (float64) or 16 (float32): ``clip`` computes
        each element's loss as scikit-learn does, from its probability clipped
        to ``[eps, 1 - eps]`` (:func:`~mlp.backends.names.log_loss_eps`), the
        gradient unchanged.
        """
        self._loss_into(self._logistic_xent, "logits", logits, targets, dlogits_out, stats, step, weights,
                        *TARGET_RANGES["logistic"], clip=bool(clip))

    @abstractmethod
    def _logistic_xent(self, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int,
                       weights: Any = None, clip: bool = False) -> None: ...

    def squared_error_into(
        self, pred: Any, targets: Any, dpred_out: Any, stats: Any, step: int = 0, weights: Any = None
    ) -> None:
        """Identity outputs (regression): per row ``0.5 * mean_j (pred_j - t_j)^2``.

        pred, targets and ``dpred_out`` (or None): (N, C), one float dtype.
        Gradient ``w (pred - t) / S``, not divided by C (as scikit-learn's).
        No hits are counted.
        """
        self._loss_into(self._squared_error, "pred", pred, targets, dpred_out, stats, step, weights)

    @abstractmethod
    def _squared_error(self, pred: Any, targets: Any, dpred: Any, stats: Any, step: int,
                       weights: Any = None) -> None: ...

    def poisson_loss_into(
        self, logits: Any, targets: Any, dlogits_out: Any, stats: Any, step: int = 0, weights: Any = None
    ) -> None:
        """Exp outputs with the Poisson deviance (scikit-learn's ``loss="poisson"``), targets >= 0.

        logits (the log of the predicted mean), targets and ``dlogits_out``
        (or None): (N, C), one float dtype.  Per row
        ``sum_j xlogy(t_j, t_j) - t_j z_j - t_j + exp(z_j)``; gradient
        ``w (exp(z) - t) / S``.  No hits are counted.
        """
        self._loss_into(self._poisson_loss, "logits", logits, targets, dlogits_out, stats, step, weights,
                        *TARGET_RANGES["exp"])

    @abstractmethod
    def _poisson_loss(self, logits: Any, targets: Any, dlogits: Any, stats: Any, step: int,
                      weights: Any = None) -> None: ...

    @abstractmethod
    def _l2_penalty(self, params: Any, n: int, scales: Any, row: int, stats: Any) -> None:
        """``stats[STATS_LOSS_SUM] += scales[row] * sum(params[:n]**2)``: scikit-learn's
        ``0.5 * alpha * ||W||^2`` term, its scale read from ``scales`` (a 1-D array of the params' dtype)
        so that a captured step follows a new scale."""
