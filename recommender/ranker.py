"""The second stage: a LightGBM lambdarank model over the ``FEATURES`` of candidates.

LightGBM's untyped API stops here. A model is saved as LightGBM's own text format (no
pickle) beside the factors; predictions run on one thread, as everything in a web process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from recommender.features import F32, FEATURES


@dataclass(frozen=True)
class RankerParams:
    """Small trees, few of them: a prediction over ~200 candidates must cost well under a
    millisecond on one thread."""

    rounds: int = 60
    leaves: int = 15
    learning_rate: float = 0.1
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    seed: int = 7


class Ranker:
    """A trained ranker: higher scores first."""

    def __init__(self, booster: Any) -> None:
        self._booster = booster

    @classmethod
    def train(cls, groups: Sequence[tuple[F32, npt.NDArray[np.float32]]],
              params: RankerParams | None = None) -> Ranker:
        """Fit on query groups (a member's candidates' features and their 0/1 labels);
        groups without a positive teach a ranking nothing and are left out."""
        p = params or RankerParams()
        kept = [(x, y) for x, y in groups if len(y) and y.max() > 0 and y.min() < y.max()]
        if not kept:
            raise ValueError("no member bought any candidate in the label window")
        x = np.concatenate([g[0] for g in kept]).astype(np.float32)
        y = np.concatenate([g[1] for g in kept]).astype(np.float32)
        data = lgb.Dataset(x, y, group=[len(g[1]) for g in kept],
                           feature_name=list(FEATURES), free_raw_data=True)
        try:
            booster = cls._fit(data, p)
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"ranker not trained: {exc}") from exc
        return cls(booster)

    @staticmethod
    def _fit(data: Any, p: RankerParams) -> Any:
        return lgb.train({
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10, 20],
            "num_leaves": p.leaves, "learning_rate": p.learning_rate,
            "min_data_in_leaf": p.min_data_in_leaf, "feature_fraction": p.feature_fraction,
            "lambdarank_truncation_level": 30, "num_threads": 1, "seed": p.seed,
            "deterministic": True, "verbose": -1,
        }, data, num_boost_round=p.rounds)

    def predict(self, features: F32) -> npt.NDArray[np.float64]:
        if not len(features):
            return np.zeros(0)
        out: Any = self._booster.predict(features, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def importance(self) -> dict[str, float]:
        gains: Any = self._booster.feature_importance(importance_type="gain")
        return dict(zip(FEATURES, (float(g) for g in gains), strict=True))

    def dump(self) -> str:
        text: str = self._booster.model_to_string()
        return text

    def save(self, path: Path) -> None:
        path.write_text(self.dump())

    @classmethod
    def load(cls, path: Path) -> Ranker:
        try:
            booster = lgb.Booster(model_str=path.read_text())
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"ranker {path.name}: {exc}") from exc
        names = list(booster.feature_name())
        if names != list(FEATURES):
            raise ValueError(f"ranker {path.name} has features {names}, expected {FEATURES}")
        return cls(booster)
