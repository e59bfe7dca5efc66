"""One-to-one matching of two sets of masks by their [A, B] IoU matrix (io.rle.iou_matrix).

- `greedy_pairs`: best pairs first; a pair is taken when neither of its masks is taken yet. What an
  annotator or a reviewer does: the fast preset's agreement (amg/agreement.py), stage 2's merge
  (semi/merge.py) and the simulated annotator (semi/annotator.py).
- `exact_pairs`: the assignment with the largest summed IoU (Hungarian), as SA-1B's audit pairs masks
  (audit/core.py).

They differ where taking the best pair first blocks two good ones (tests/test_match.py).
This module lives in io, beside the RLE IoU it consumes, because amg (layer 3) and semi use it and
may not import audit (tests/test_architecture.py).
"""

from __future__ import annotations

import numpy as np


def greedy_pairs(iou: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """(row, column, IoU) pairs of an [A, B] IoU matrix, highest IoU first (ties in row-major order),
    each row and column at most once, every pair with IoU >= min_iou and > 0."""
    pairs, used_rows, used_cols = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < min_iou or iou[r, c] <= 0:
            break
        if r not in used_rows and c not in used_cols:
            pairs.append((r, c, float(iou[r, c])))
            used_rows.add(r)
            used_cols.add(c)
    return pairs


def exact_pairs(iou: np.ndarray, min_iou: float = 0.0) -> list[tuple[int, int, float]]:
    """(row, column, IoU) pairs of an [A, B] IoU matrix, one to one, maximising the summed IoU, sorted by
    row; pairs with IoU <= min_iou are not pairs.

    Entries <= min_iou add nothing, so the problem splits into the connected groups of rows and
    columns that overlap; each group is solved exactly on its own.
    """
    useful = np.where(iou > min_iou, iou, 0.0)
    pairs = []
    for rows, cols in overlap_groups(useful):
        sub = useful[np.ix_(rows, cols)]
        for r, c in hungarian_max(sub):
            if sub[r, c] > 0:
                pairs.append((int(rows[r]), int(cols[c]), float(sub[r, c])))
    return sorted(pairs)


def overlap_groups(weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Connected components of the bipartite graph with an edge where weights > 0."""
    n_rows, n_cols = weights.shape
    parent = list(range(n_rows + n_cols))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # Union every row with every column it overlaps
    for r, c in zip(*np.nonzero(weights)):
        parent[find(int(r))] = find(n_rows + int(c))
    # Collect rows and columns by root; keep groups that have both
    groups: dict[int, tuple[list, list]] = {}
    for node in range(n_rows + n_cols):
        rows, cols = groups.setdefault(find(node), ([], []))
        (rows if node < n_rows else cols).append(node if node < n_rows else node - n_rows)
    return [(np.array(r), np.array(c)) for r, c in groups.values() if r and c]


def hungarian_max(weights: np.ndarray) -> list[tuple[int, int]]:
    """Assignment maximising the summed weights (every row or every column is assigned)."""
    if weights.shape[0] > weights.shape[1]:
        return [(r, c) for c, r in hungarian_max(weights.T)]
    return hungarian_min(-weights)


def hungarian_min(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of every row of an [n, m] cost matrix, n <= m.

    Shortest augmenting paths with row/column potentials (Kuhn-Munkres, O(n^2 m)); the inner scan
    over columns is vectorised. Index 0 of `owner`/`way` is a virtual column holding the new row.
    """
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)  # row and column potentials
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: 1-based row assigned to column j (0: none)
    way = np.zeros(m + 1, dtype=np.int64)  # previous column on the shortest path
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        min_slack = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        # Grow the alternating tree until it reaches a free column
        while owner[j0] != 0:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            slack = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (slack < min_slack[1:])
            min_slack[1:][better] = slack[better]
            way[1:][better] = j0
            candidates = np.where(free, min_slack[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            # Shift potentials so the tightest edge becomes tight
            u[owner[used]] += delta
            v[used] -= delta
            min_slack[1:][free] -= delta
            j0 = j1
        # Flip the path back to the root
        while j0 != 0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    return sorted((int(owner[j]) - 1, j - 1) for j in range(1, m + 1) if owner[j] != 0)
