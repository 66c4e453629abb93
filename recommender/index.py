"""The FAISS adapter: inner-product search over item factors, exact while small, HNSW above.

FAISS's untyped API stops here. Searches run with one OpenMP thread: a web process serves
many small queries at once, and threads per query would only fight over the cores.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

HNSW_THRESHOLD = 20_000
HNSW_M = 32
HNSW_EF_SEARCH = 128

faiss.omp_set_num_threads(1)


def _selector(allowed: Iterable[int] | None, excluded: Iterable[int] | None) -> Any:
    if allowed is not None:
        return faiss.IDSelectorBatch(np.fromiter(allowed, dtype=np.int64))
    if excluded is not None:
        ids = np.fromiter(excluded, dtype=np.int64)
        if len(ids):
            return faiss.IDSelectorNot(faiss.IDSelectorBatch(ids))
    return None


class ItemIndex:
    """Items by inner product with a user (or audience) vector."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self.kind = "hnsw" if isinstance(index, faiss.IndexHNSWFlat) else "flat"

    @classmethod
    def build(cls, item_factors: npt.NDArray[np.float32],
              hnsw_threshold: int = HNSW_THRESHOLD) -> ItemIndex:
        """Exact ``IndexFlatIP`` up to ``hnsw_threshold`` items, ``IndexHNSWFlat`` above."""
        n, dim = item_factors.shape
        data = np.ascontiguousarray(item_factors, dtype=np.float32)
        if n <= hnsw_threshold:
            index: Any = faiss.IndexFlatIP(dim)
        else:
            index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
        index.add(data)
        return cls(index)

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def memory_bytes(self) -> int:
        return len(faiss.serialize_index(self._index))

    def search(
        self, query: npt.NDArray[np.float32], k: int, *,
        allowed: Iterable[int] | None = None, excluded: Iterable[int] | None = None,
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (item, score) best first; ``allowed``/``excluded`` are FAISS ID
        selectors (an HNSW search with a narrow filter can find fewer than ``k``)."""
        k = min(k, self.size)
        if k <= 0:
            return []
        sel = _selector(allowed, excluded)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if self.kind == "hnsw":
            params: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(HNSW_EF_SEARCH, k)
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        scores, ids = self._index.search(q, k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path) -> ItemIndex:
        return cls(faiss.read_index(str(path)))
