"""Training: implicit-feedback ALS over confidence built from the event log.

Confidence of a (user, product) pair is ``sum(kind weight x recency decay x log-quantity)``:

- Kind weights (view 1, click 2, cart 4, purchase 8, checkin 0): each step down the funnel
  is roughly twice as telling as the one before it. A purchase spends money and is the
  strongest sign of taste; putting a product in the cart is half of that because carts are
  often abandoned; a click is deliberate but cheap; a view of a pinned product is mostly the
  host's choice, not the viewer's. A check-in names no product, so it adds no confidence.
- Recency: weights halve every 90 days. Retail taste drifts with the season (the Online
  Retail data is a gift shop whose best sellers change from summer to Christmas), and a
  quarter is the horizon the shop plans its ranges on; older events still count, for less.
- Quantity: ``1 + log(qty)``, so a wholesale order of 500 units does not drown out ten
  separate purchases of one unit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

log = logging.getLogger("newretail.recommender")

KIND_WEIGHTS: dict[str, float] = {
    "view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0, "checkin": 0.0,
}
HALF_LIFE_DAYS = 90.0
DAY = 86_400.0

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AlsParams:
    """ALS hyper-parameters (tuned on splits inside the Online Retail development file)."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    seed: int = 7


def event_weight(kind: str, ts: float, now: float, qty: int = 1) -> float:
    """Confidence contributed by one event seen at time ``now``."""
    base = KIND_WEIGHTS.get(kind, 0.0)
    if base == 0.0:
        return 0.0
    age_days = max(0.0, (now - ts) / DAY)
    return float(base * 0.5 ** (age_days / HALF_LIFE_DAYS) * (1.0 + math.log(max(1, qty))))


def confidence_matrix(
    user_idx: npt.NDArray[np.int64], item_idx: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64], n_users: int, n_items: int,
) -> csr_matrix:
    """Users x items confidence (duplicates summed)."""
    keep = weights > 0
    return csr_matrix(
        (weights[keep].astype(np.float32), (user_idx[keep], item_idx[keep])),
        shape=(n_users, n_items), dtype=np.float32,
    )


def new_als(params: AlsParams) -> object:
    """An implicit CPU ALS model with its own threads off (BLAS is limited around it)."""
    return AlternatingLeastSquares(
        factors=params.factors, regularization=params.regularization, alpha=params.alpha,
        iterations=params.iterations, random_state=params.seed, num_threads=1,
        calculate_training_loss=False,
    )


def train_als(
    matrix: csr_matrix, params: AlsParams,
    on_iteration: Callable[[int], None] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Fit ALS; returns (user factors, item factors), float32, C-contiguous."""
    def callback(iteration: int, elapsed: float, loss: float) -> None:
        if on_iteration is not None:
            on_iteration(iteration)

    with threadpool_limits(limits=1, user_api="blas"):
        model = new_als(params)
        model.fit(matrix, show_progress=False, callback=callback)  # type: ignore[attr-defined]
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)  # type: ignore[attr-defined]
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)  # type: ignore[attr-defined]
    return users, items


class FoldIn:
    """A fresh user vector from their events and fixed item factors (no retraining).

    The equations of implicit's ``recalculate_user`` (Hu, Koren and Volinsky's implicit ALS
    step for one user), solved directly: with a user's few events, building the one-row
    sparse matrix and calling through implicit cost ten times the algebra. Serving limits
    BLAS to one thread for the whole process once (entering threadpoolctl's context per
    request costs more than the fold-in itself)."""

    _blas_limited = False

    def __init__(self, item_factors: FloatArray, params: AlsParams) -> None:
        if not FoldIn._blas_limited:
            threadpool_limits(limits=1, user_api="blas")
            FoldIn._blas_limited = True
        self.item_factors = item_factors
        self.alpha = params.alpha
        y = item_factors.astype(np.float64)
        # YtY + lambda I, shared by every user; each adds only the terms of their items.
        self._base = y.T @ y + params.regularization * np.eye(y.shape[1])
        self.n_items = item_factors.shape[0]

    def user_vector(self, items: Sequence[int], weights: Sequence[float]) -> FloatArray:
        """x = (YtY + lambda I + Yt (Cu - I) Y)^-1 Yt Cu p(u), with Cu = alpha w on the
        user's items (weights positive, items distinct: the caller sums them)."""
        y = self.item_factors[np.asarray(items, dtype=np.intp)].astype(np.float64)
        c = self.alpha * np.asarray(weights, dtype=np.float64)
        a = self._base + (y.T * (c - 1.0)) @ y
        return np.linalg.solve(a, y.T @ c).astype(np.float32)
