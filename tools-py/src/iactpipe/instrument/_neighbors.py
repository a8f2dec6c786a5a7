"""Nearest-pixel search for camera neighbour lists (numba; replaces a scipy k-d tree at start-up)."""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _insert(best_d, best_j, count, d, j):
    """Insert (d, j) into the sorted first ``count`` entries (by distance, then index); returns the new count."""
    k = len(best_d)
    if count == k and (d > best_d[k - 1] or (d == best_d[k - 1] and j > best_j[k - 1])):
        return count
    pos = min(count, k - 1)
    while pos > 0 and (best_d[pos - 1] > d or (best_d[pos - 1] == d and best_j[pos - 1] > j)):
        if pos < k:
            best_d[pos] = best_d[pos - 1]
            best_j[pos] = best_j[pos - 1]
        pos -= 1
    best_d[pos] = d
    best_j[pos] = j
    return min(count + 1, k)


@njit(cache=True, nogil=True)
def k_nearest(x, y, k, manhattan):
    """The ``k`` nearest other points of every point: ``(distances, indices)`` of shape (n, k), nearest first
    (ties by index; -1 / inf where there are fewer than k others).  L1 distance with ``manhattan``, else L2.

    The points are scanned in order of x outwards from each point, stopping where the x
    distance alone exceeds the k-th best distance.
    """
    n = len(x)
    order = np.argsort(x, kind="mergesort")
    rank = np.empty(n, np.int64)
    for r in range(n):
        rank[order[r]] = r
    distances = np.full((n, k), np.inf)
    indices = np.full((n, k), -1, np.int64)
    for i in range(n):
        best_d = distances[i]
        best_j = indices[i]
        count = 0
        for direction in (1, -1):
            r = rank[i] + direction
            while 0 <= r < n:
                j = order[r]
                dx = abs(x[j] - x[i])
                if count == k and dx > best_d[k - 1]:
                    break
                dy = abs(y[j] - y[i])
                d = dx + dy if manhattan else np.sqrt(dx * dx + dy * dy)
                count = _insert(best_d, best_j, count, d, j)
                r += direction
    return distances, indices
