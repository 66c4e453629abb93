"""Model versions on disk, without pickle: factors as ``.npy``, id maps as JSON, the FAISS
index file, and an atomically replaced ``current`` pointer naming the version to serve."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from recommender.candidates import unit_rows
from recommender.discovery import Discovery
from recommender.index import ItemIndex
from recommender.rank import is_offerable
from recommender.train import AlsParams
from recommender.types import RecommenderError

CURRENT = "current"
KEEP_VERSIONS = 3
TRENDING_KEEP = 2000


@dataclass
class Model:
    """One trained version, as a web process serves it."""

    version: str
    item_ids: list[str]
    user_ids: list[str]
    item_factors: npt.NDArray[np.float32]
    user_factors: npt.NDArray[np.float32]
    popularity: npt.NDArray[np.float32]
    params: AlsParams
    index: ItemIndex
    discovery: Discovery | None = None  # the two-stage rankers, when trained with them
    item_pos: dict[str, int] = field(init=False)
    user_pos: dict[str, int] = field(init=False)
    trending: list[tuple[str, float]] = field(init=False)
    pop_top: float = field(init=False)  # the largest popularity, to scale scores to 1
    offerable: npt.NDArray[np.bool_] = field(init=False)  # not postage, fees, vouchers
    banned: npt.NDArray[np.int64] = field(init=False)  # positions of the non-offerable
    user_unit: npt.NDArray[np.float32] = field(init=False)  # user factors, unit rows

    def __post_init__(self) -> None:
        self.item_pos = {s: i for i, s in enumerate(self.item_ids)}
        self.user_pos = {u: i for i, u in enumerate(self.user_ids)}
        self.pop_top = float(self.popularity.max()) if len(self.popularity) else 1.0
        self.pop_top = self.pop_top or 1.0
        order = np.argsort(-self.popularity, kind="stable")[:TRENDING_KEEP]
        top = float(self.popularity[order[0]]) if len(order) else 1.0
        self.offerable = np.array([is_offerable(s) for s in self.item_ids], dtype=bool)
        self.banned = np.flatnonzero(~self.offerable).astype(np.int64)
        self.user_unit = unit_rows(self.user_factors)
        self.trending = [(self.item_ids[i], float(self.popularity[i]) / (top or 1.0))
                         for i in order if self.offerable[i]]

    def forget_users(self, users: set[str]) -> None:
        """Drop the factors of erased users from this process's copy."""
        for user in users:
            pos = self.user_pos.pop(user, None)
            if pos is not None:
                self.user_factors[pos] = 0.0
                self.user_unit[pos] = 0.0


def write_version(
    model_dir: Path, item_ids: list[str], user_ids: list[str],
    item_factors: npt.NDArray[np.float32], user_factors: npt.NDArray[np.float32],
    popularity: npt.NDArray[np.float32], params: AlsParams, hnsw_threshold: int,
    discovery: Discovery | None = None,
) -> str:
    """Write a new version and make it current; returns its name."""
    version = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.urandom(3).hex()}"
    tmp = model_dir / f".{version}.tmp"
    tmp.mkdir(parents=True)
    np.save(tmp / "item_factors.npy", item_factors, allow_pickle=False)
    np.save(tmp / "user_factors.npy", user_factors, allow_pickle=False)
    np.save(tmp / "popularity.npy", popularity.astype(np.float32), allow_pickle=False)
    (tmp / "ids.json").write_text(json.dumps({"items": item_ids, "users": user_ids}))
    (tmp / "params.json").write_text(json.dumps(params.__dict__))
    ItemIndex.build(item_factors, hnsw_threshold).save(tmp / "items.faiss")
    if discovery is not None:
        discovery.save(tmp)
    tmp.rename(model_dir / version)
    pointer = model_dir / f".{CURRENT}.tmp"
    pointer.write_text(version)
    pointer.replace(model_dir / CURRENT)
    _prune(model_dir, version)
    return version


def _prune(model_dir: Path, keep: str) -> None:
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in versions[:-KEEP_VERSIONS]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def current_version(model_dir: Path) -> str | None:
    try:
        return (model_dir / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def read_version(model_dir: Path, version: str) -> Model:
    """Load a version; any missing or inconsistent file is a ``RecommenderError``."""
    path = model_dir / version
    try:
        ids = json.loads((path / "ids.json").read_text())
        params = AlsParams(**json.loads((path / "params.json").read_text()))
        items = np.load(path / "item_factors.npy", allow_pickle=False)
        users = np.load(path / "user_factors.npy", allow_pickle=False)
        pop = np.load(path / "popularity.npy", allow_pickle=False)
        index = ItemIndex.load(path / "items.faiss")
        discovery = Discovery.load(path)
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise RecommenderError("model_unreadable", f"model {version}: {exc}") from exc
    if (items.shape[0] != len(ids["items"]) or users.shape[0] != len(ids["users"])
            or index.size != len(ids["items"]) or pop.shape[0] != len(ids["items"])):
        raise RecommenderError("model_unreadable", f"model {version}: shapes disagree")
    if discovery is not None and (discovery.table.n_items != len(ids["items"]) or len(
            discovery.table.user_indptr) != len(ids["users"]) + 1):
        raise RecommenderError("model_unreadable", f"model {version}: ranker's items disagree")
    return Model(version, ids["items"], ids["users"], items.astype(np.float32),
                 users.astype(np.float32), pop.astype(np.float32), params, index, discovery)
