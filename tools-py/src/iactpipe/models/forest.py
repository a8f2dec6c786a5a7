"""Decision forests as flat arrays, and their inference as numba kernels.

A fitted scikit-learn forest (RandomForest / ExtraTrees, regressor or classifier) is turned into
a :class:`FlatForest`: all trees' nodes concatenated into plain arrays, tree ``t`` owning the nodes
``node_offset[t]:node_offset[t + 1]`` (child indices are local to their tree):

- ``feature`` (int32): feature index compared at the node, -2 at leaves (as in scikit-learn);
- ``threshold`` (float64): go left if ``float32(x[feature]) <= threshold``;
- ``left``, ``right`` (int32): children, -1 at leaves;
- ``missing_left`` (uint8): where a NaN feature goes (1 = left), scikit-learn's missing-value rule;
- ``value`` (float64, ``[n_nodes, n_values]``): leaf values (regression targets, or class
  probabilities of a classifier's leaf); zero at inner nodes, which inference never reads.

Prediction = mean over trees of the leaf values, summed in tree order like scikit-learn, with
the features cast to float32 first like scikit-learn does: equal to ``predict`` /
``predict_proba`` within floating-point rounding of the sum.

Inference (:func:`predict_forest`, layout built once per forest by :func:`_packed`) copies the
rows, block by block, into tiles of ``LANES`` rows (feature-major within a tile, float32); for each
tree, a vectorised pass takes every row through the tree's top ``TOP`` levels (all 15 comparisons
evaluated branch-free, the path picked by selects), then each tile's rows go from there to their
leaves in lockstep, branch-free, over 12-byte node records laid out in pre-order (the left child is
the next record, so a level costs one dependent load of the record, one of the feature value and a
select), so that the lanes' memory loads overlap.  A block goes through all trees before the next
(large blocks: a tree's nodes are reused by many rows while it is in cache).
"""

from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

__all__ = ["FlatForest", "flatten_forest", "predict_forest", "SUPPORTED_ESTIMATORS"]

SUPPORTED_ESTIMATORS = {
    "RandomForestRegressor": "regressor",
    "ExtraTreesRegressor": "regressor",
    "RandomForestClassifier": "classifier",
    "ExtraTreesClassifier": "classifier",
}

BLOCK = 131072  # most rows taken through one tree before the next (the tree is reused while in cache)
LANES = 16  # rows stepped down a tree in lockstep (see _descend); a tile holds LANES rows
TOP = 4  # levels taken by the vectorised first pass (_top_exits): 15 nodes, 16 exits
MAX_WORDS = 2**32  # node records are addressed by 32-bit word offsets: at most (2**32 - 1) // 3 nodes


@dataclass
class FlatForest:
    """The trees of one fitted forest as flat arrays (see the module docstring)."""

    task: str  # "regressor" or "classifier"
    n_features: int
    node_offset: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    classes: np.ndarray | None = None  # classifier labels, in the order of value's columns
    estimator: str = ""
    params: dict = field(default_factory=dict)

    @property
    def n_trees(self):
        return len(self.node_offset) - 1

    @property
    def n_nodes(self):
        return len(self.feature)

    @property
    def n_values(self):
        return self.value.shape[1]

    def predict(self, X, n_threads=1):
        """Mean leaf values ``[n_rows, n_values]`` for the feature matrix ``X``
        (regressors: the predictions; classifiers: the class probabilities)."""
        return predict_forest(self, X, n_threads=n_threads)

    def predict_proba(self, X, n_threads=1):
        """Class probabilities (classifiers), ``[n_rows, n_classes]``."""
        if self.task != "classifier":
            raise TypeError("predict_proba needs a classifier forest")
        return predict_forest(self, X, n_threads=n_threads)

    def positive_score(self, X, positive_class, n_threads=1):
        """Probability of the class labelled ``positive_class`` (e.g. 0 = gamma)."""
        matches = np.flatnonzero(self.classes == positive_class)
        if len(matches) != 1:
            raise ValueError(f"class {positive_class} not among the forest's classes {list(self.classes)}")
        return self.predict_proba(X, n_threads)[:, matches[0]]


def flatten_forest(model):
    """Flatten a fitted scikit-learn forest into a :class:`FlatForest`."""
    name = type(model).__name__
    if name not in SUPPORTED_ESTIMATORS:
        raise TypeError(f"unsupported estimator {name}; supported: {sorted(SUPPORTED_ESTIMATORS)}")
    task = SUPPORTED_ESTIMATORS[name]
    if not hasattr(model, "estimators_"):
        raise ValueError(f"{name} is not fitted")
    if model.n_outputs_ != 1 and task == "classifier":
        raise ValueError("multi-output classifiers are not supported")
    trees = [est.tree_ for est in model.estimators_]
    counts = np.array([t.node_count for t in trees], dtype=np.int64)
    offset = np.zeros(len(trees) + 1, dtype=np.int64)
    np.cumsum(counts, out=offset[1:])
    n_values = model.n_classes_ if task == "classifier" else model.n_outputs_
    value = np.zeros((offset[-1], n_values), dtype=np.float64)
    parts = {k: [] for k in ("feature", "threshold", "left", "right", "missing_left")}
    for t, tree in enumerate(trees):
        left = tree.children_left.astype(np.int32)
        parts["feature"].append(tree.feature.astype(np.int32))
        parts["threshold"].append(tree.threshold.astype(np.float64))
        parts["left"].append(left)
        parts["right"].append(tree.children_right.astype(np.int32))
        parts["missing_left"].append(np.asarray(tree.missing_go_to_left, dtype=np.uint8))
        leaves = left == -1
        if task == "classifier":
            # scikit-learn >= 1.4 stores class fractions in tree_.value; predict_proba returns them
            leaf_values = tree.value[:, 0, :n_values]
        else:
            leaf_values = tree.value[:, :, 0]
        block = value[offset[t]:offset[t + 1]]
        block[leaves] = leaf_values[leaves]
    flat = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in parts.items()}
    return FlatForest(
        task=task,
        n_features=int(model.n_features_in_),
        node_offset=offset,
        value=value,
        classes=np.asarray(model.classes_) if task == "classifier" else None,
        estimator=name,
        params=_json_params(model.get_params(deep=False)),
        **flat,
    )


def _json_params(params):
    """Hyper-parameters as JSON-safe values (objects such as a RandomState become their repr)."""
    out = {}
    for key, value in params.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, np.integer | np.floating):
            out[key] = value.item()
        else:
            out[key] = repr(value)
    return out


def predict_forest(forest, X, n_threads=1):
    """Mean of the trees' leaf values for each row of ``X`` -> ``[n_rows, n_values]`` float64.

    ``X`` is cast to float32 (scikit-learn's input type) as its rows are copied into tiles;
    ``n_threads > 1`` splits the rows over numba threads (results identical to one thread).
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != forest.n_features:
        raise ValueError(f"X has shape {X.shape}, the forest expects {forest.n_features} features")
    X = np.ascontiguousarray(X, dtype=X.dtype if X.dtype in (np.float32, np.float64) else np.float32)
    out = np.zeros((X.shape[0], forest.n_values), dtype=np.float64)
    if X.shape[0] == 0:
        return out
    args = (X, *_packed(forest), out)
    if n_threads is None or n_threads > 1:
        previous = numba.get_num_threads()
        limit = numba.config.NUMBA_NUM_THREADS
        numba.set_num_threads(limit if n_threads is None else max(1, min(n_threads, limit)))
        try:
            n_rows = X.shape[0]
            chunk = -(-n_rows // numba.get_num_threads())  # at least one block per thread
            chunk = min(BLOCK, -(-chunk // LANES) * LANES)
            _predict_parallel(*args, chunk)
        finally:
            numba.set_num_threads(previous)
    else:
        # small trees (<= 4096 nodes, 48 KiB) stay in cache anyway: then smaller blocks keep the rows' tiles in
        # cache too
        block = BLOCK if forest.n_nodes > 4096 * forest.n_trees else min(BLOCK, 8192)
        n_blocks = -(-X.shape[0] // block)
        _predict_serial(*args, -(-X.shape[0] // n_blocks))  # blocks of equal size
    return out


def _packed(forest):
    """Inference layout, built once per forest (cached on it; the stored arrays are unchanged).

    Node records ``rec`` (uint32), three words each, every tree's nodes in pre-order (a node, its
    left subtree, its right subtree; trees one after the other), a node addressed by the offset
    ``n`` of its first word.  Inner node: ``rec[n]`` = feature * LANES (the feature's row in a
    tile), ``thr[n + 1]`` = the threshold as float32 (``thr`` is a float32 view of ``rec``),
    ``rec[n + 2]`` = the right child's offset; the left child is the next record, ``n + 3``.  A row
    goes to ``rec[n + 2]`` if ``x > thr[n + 1]``, else to ``n + 3``.  ``float32(x) <= t`` is the
    same test as ``float32(x) <= t32`` with t32 the largest float32 not above t, so the float64
    thresholds become float32 ones without changing any decision.
    A leaf reads as a node that sends every row to itself: ``rec[n]`` = n_features * LANES + 1 (odd:
    marks the leaf; with the lane added it points into the tiles' two spare rows, all +inf),
    ``rec[n + 2]`` = n, and ``rec[n + 1]`` holds the leaf's index into ``leaf_value`` (read as a
    float32 it is finite, below +inf).  ``nan_right[n // 3]``: NaN features go right at inner node n
    (scikit-learn's missing-value rule; used only for tiles with NaNs, whose rows go down one by one).  Per tree, the top ``TOP``
    levels as a complete binary tree in breadth-first order (``top_feature``, ``top_threshold``:
    15 nodes; a leaf above level TOP continues as nodes that send everything left to it) and
    ``entry``: the record offsets of the 16 nodes reached below them.
    """
    cached = getattr(forest, "_packed_cache", None)
    if cached is not None:
        return cached
    n_trees = forest.n_trees
    n_nodes = forest.n_nodes
    if 3 * n_nodes >= MAX_WORDS or (forest.n_features + 2) * LANES >= MAX_WORDS:
        raise ValueError(f"forest too large for 32-bit node records ({n_nodes} nodes, at most "
                         f"{(MAX_WORDS - 1) // 3})")
    offsets = forest.node_offset
    leaf = forest.left == -1
    inner = ~leaf
    base = np.repeat(offsets[:-1], np.diff(offsets))  # first node of each node's tree
    at = np.empty(n_nodes, dtype=np.int64)  # record offset of each node
    order, bad = _preorder(forest.left, forest.right, offsets)
    wrong = np.flatnonzero(inner & ((forest.feature < 0) | (forest.feature >= forest.n_features)))
    if bad < 0 and len(wrong):
        bad = np.searchsorted(offsets, wrong[0], side="right") - 1
    if bad >= 0:
        raise ValueError(f"tree {bad} of the forest is malformed (children or features out of range)")
    at[order] = 3 * np.arange(n_nodes)
    thr32 = forest.threshold.astype(np.float32)
    above = thr32.astype(np.float64) > forest.threshold
    thr32[above] = np.nextafter(thr32[above], np.float32(-np.inf))
    leaf_ids = np.flatnonzero(leaf)

    rec = np.empty(3 * n_nodes, dtype=np.uint32)
    thr = rec.view(np.float32)
    rec[at[inner]] = forest.feature[inner].astype(np.int64) * LANES
    thr[at[inner] + 1] = thr32[inner]
    rec[at[inner] + 2] = at[forest.right[inner] + base[inner]]
    rec[at[leaf_ids]] = forest.n_features * LANES + 1
    rec[at[leaf_ids] + 1] = np.arange(len(leaf_ids))
    rec[at[leaf_ids] + 2] = at[leaf_ids]
    nan_right = np.zeros(n_nodes, dtype=np.uint8)
    nan_right[at[inner] // 3] = forest.missing_left[inner] == 0
    leaf_value = np.ascontiguousarray(forest.value[leaf_ids])

    # the top TOP levels of every tree, breadth-first (position k has children 2k + 1, 2k + 2)
    n_top = 2**TOP - 1
    node = np.empty((n_trees, 2 * n_top + 1), dtype=np.int64)  # global node id at each position
    node[:, 0] = offsets[:-1]
    top_feature = np.zeros((n_trees, n_top), dtype=np.uint64)
    top_threshold = np.full((n_trees, n_top), np.inf, dtype=np.float32)
    for k in range(n_top):
        nd = node[:, k]
        inner_k = inner[nd]
        top_feature[inner_k, k] = forest.feature[nd[inner_k]].astype(np.uint64) * np.uint64(LANES)
        top_threshold[inner_k, k] = thr32[nd[inner_k]]
        node[:, 2 * k + 1] = np.where(inner_k, forest.left[nd] + offsets[:-1], nd)
        node[:, 2 * k + 2] = np.where(inner_k, forest.right[nd] + offsets[:-1], nd)
    entry = at[node[:, n_top:]].astype(np.uint64)
    roots = at[offsets[:-1]].astype(np.uint64)
    cached = (rec, thr, nan_right, leaf_value, roots, top_feature, top_threshold, entry)
    forest._packed_cache = cached
    return cached


@njit(cache=True)
def _preorder(left, right, node_offset):
    """``(order, bad)``: the global node ids in pre-order (node, left subtree, right subtree), tree after
    tree, and ``bad`` = -1; or, if a tree's nodes do not form one binary tree below its node 0 (a damaged
    model file), ``bad`` = that tree and ``order`` is incomplete."""
    order = np.empty(len(left), dtype=np.int64)
    stack = np.empty(len(left) + 1, dtype=np.int64)
    k = 0
    for t in range(len(node_offset) - 1):
        base = node_offset[t]
        size = node_offset[t + 1] - base
        stack[0] = 0
        top = 1
        while top > 0:
            top -= 1
            node = base + stack[top]
            if k - base == size:  # more visits than nodes: a node is reached twice
                return order, t
            order[k] = node
            k += 1
            if left[node] != -1:
                if not (0 < left[node] < size and 0 < right[node] < size):
                    return order, t
                stack[top] = right[node]
                stack[top + 1] = left[node]
                top += 2
        if k - base != size:  # some nodes not reached from the root
            return order, t
    return order, -1


@intrinsic
def _select(typingctx, condition, a, b):
    """``a if condition else b`` as a branch-free select, marked unpredictable: otherwise LLVM turns it
    into a branch on the loaded comparison, which mispredicts half the time (4-5x slower descents)."""
    sig = a(types.boolean, a, a)

    def codegen(context, builder, signature, args):
        value = builder.select(*args)
        value.set_metadata("unpredictable", builder.module.add_metadata([]))
        return value

    return sig, codegen


@njit(cache=True, inline="always")
def _down(xt, rec, thr, n, j, done):
    """Record offset of the child of node ``n`` that lane ``j`` goes to, and ``done`` AND-ed with the
    node's first word (whose bit 0 marks a leaf)."""
    f = rec[n]
    x = xt[np.uint64(f) + np.uint64(j)]
    return _select(x > thr[n + np.uint64(1)], np.uint64(rec[n + np.uint64(2)]), n + np.uint64(3)), done & f


@njit(cache=True, inline="always")
def _descend(xt, rec, thr, entry, ex, first, leaves):
    """Take the LANES = 16 rows of the tile ``xt`` (lane j: features ``xt[j]``, ``xt[LANES + j]``, ...) from
    their entry nodes ``entry[ex[first + j]]`` down to their leaves in lockstep, one level per pass,
    branch-free (leaves send rows to themselves); the leaves' record offsets go to ``leaves``."""
    n0 = entry[ex[first + 0]]
    n1 = entry[ex[first + 1]]
    n2 = entry[ex[first + 2]]
    n3 = entry[ex[first + 3]]
    n4 = entry[ex[first + 4]]
    n5 = entry[ex[first + 5]]
    n6 = entry[ex[first + 6]]
    n7 = entry[ex[first + 7]]
    n8 = entry[ex[first + 8]]
    n9 = entry[ex[first + 9]]
    n10 = entry[ex[first + 10]]
    n11 = entry[ex[first + 11]]
    n12 = entry[ex[first + 12]]
    n13 = entry[ex[first + 13]]
    n14 = entry[ex[first + 14]]
    n15 = entry[ex[first + 15]]
    while True:
        done = np.uint32(1)  # stays 1 if every lane was at its leaf
        n0, done = _down(xt, rec, thr, n0, 0, done)
        n1, done = _down(xt, rec, thr, n1, 1, done)
        n2, done = _down(xt, rec, thr, n2, 2, done)
        n3, done = _down(xt, rec, thr, n3, 3, done)
        n4, done = _down(xt, rec, thr, n4, 4, done)
        n5, done = _down(xt, rec, thr, n5, 5, done)
        n6, done = _down(xt, rec, thr, n6, 6, done)
        n7, done = _down(xt, rec, thr, n7, 7, done)
        n8, done = _down(xt, rec, thr, n8, 8, done)
        n9, done = _down(xt, rec, thr, n9, 9, done)
        n10, done = _down(xt, rec, thr, n10, 10, done)
        n11, done = _down(xt, rec, thr, n11, 11, done)
        n12, done = _down(xt, rec, thr, n12, 12, done)
        n13, done = _down(xt, rec, thr, n13, 13, done)
        n14, done = _down(xt, rec, thr, n14, 14, done)
        n15, done = _down(xt, rec, thr, n15, 15, done)
        if done:  # written to an array, not returned as a tuple: the caller indexes it in a loop
            leaves[0] = n0
            leaves[1] = n1
            leaves[2] = n2
            leaves[3] = n3
            leaves[4] = n4
            leaves[5] = n5
            leaves[6] = n6
            leaves[7] = n7
            leaves[8] = n8
            leaves[9] = n9
            leaves[10] = n10
            leaves[11] = n11
            leaves[12] = n12
            leaves[13] = n13
            leaves[14] = n14
            leaves[15] = n15
            return


@njit(cache=True)
def _descend_nan(xt, rec, thr, nan_right, node, j):
    """One lane from ``node`` to its leaf, NaN features going where scikit-learn sends them."""
    three = np.uint64(3)
    while not rec[node] & np.uint32(1):
        v = xt[np.uint64(rec[node]) + np.uint64(j)]
        right = (v > thr[node + np.uint64(1)]) | (np.isnan(v) & (nan_right[node // three] == 1))
        node = np.uint64(rec[node + np.uint64(2)]) if right else node + three
    return node


@njit(cache=True)
def _top_exits(xt, n_tiles, tile, feature, threshold, ex):
    """Exit (0-15) of every row of the tiles from one tree's top TOP = 4 levels into ``ex``:
    all 15 comparisons, branch-free (the loop over a tile's lanes vectorises), the path by selects."""
    f0, f1, f2, f3, f4, f5, f6, f7 = feature[:8]
    f8, f9, f10, f11, f12, f13, f14 = feature[8:15]
    t0, t1, t2, t3, t4, t5, t6, t7 = threshold[:8]
    t8, t9, t10, t11, t12, t13, t14 = threshold[8:15]
    for g in range(n_tiles):
        b = np.uint64(g) * np.uint64(tile)
        for j in range(np.uint64(LANES)):
            r = b + j
            c0 = np.uint32(xt[f0 + r] > t0)
            c1 = np.uint32(xt[f1 + r] > t1)
            c2 = np.uint32(xt[f2 + r] > t2)
            c3 = np.uint32(xt[f3 + r] > t3)
            c4 = np.uint32(xt[f4 + r] > t4)
            c5 = np.uint32(xt[f5 + r] > t5)
            c6 = np.uint32(xt[f6 + r] > t6)
            c7 = np.uint32(xt[f7 + r] > t7)
            c8 = np.uint32(xt[f8 + r] > t8)
            c9 = np.uint32(xt[f9 + r] > t9)
            c10 = np.uint32(xt[f10 + r] > t10)
            c11 = np.uint32(xt[f11 + r] > t11)
            c12 = np.uint32(xt[f12 + r] > t12)
            c13 = np.uint32(xt[f13 + r] > t13)
            c14 = np.uint32(xt[f14 + r] > t14)
            b1 = c0
            b2 = c2 if b1 else c1
            b3 = (c6 if b2 else c5) if b1 else (c4 if b2 else c3)
            b4 = (((c14 if b3 else c13) if b2 else (c12 if b3 else c11)) if b1
                  else ((c10 if b3 else c9) if b2 else (c8 if b3 else c7)))
            ex[np.uint64(g * LANES) + j] = 8 * b1 + 4 * b2 + 2 * b3 + b4


@njit(cache=True)
def _predict_block(X, start, stop, xt, ex, rec, thr, nan_right, leaf_value, roots, top_feature, top_threshold,
                   entry, out):
    """Rows ``start:stop`` (at most BLOCK) through all trees, tree by tree, summing leaf values in tree order."""
    n_features = X.shape[1]
    n_values = leaf_value.shape[1]
    n = stop - start
    tile = (n_features + 2) * LANES  # the features, then two rows of +inf that leaves point into
    n_tiles = (n + LANES - 1) // LANES
    nan_tile = np.zeros(n_tiles, dtype=np.bool_)  # tiles with a NaN feature take the per-row NaN path
    for g in range(n_tiles):
        nan = False
        for j in range(LANES):
            r = g * LANES + j
            for f in range(n_features):
                value = X[start + r, f] if r < n else 0.0
                xt[g * tile + f * LANES + j] = value  # to float32
                nan |= np.isnan(value)
            xt[g * tile + n_features * LANES + j] = np.inf
            xt[g * tile + (n_features + 1) * LANES + j] = np.inf
        nan_tile[g] = nan
    one = np.uint64(1)
    leaves = np.empty(LANES, dtype=np.uint64)
    for t in range(len(roots)):
        _top_exits(xt, n_tiles, tile, top_feature[t], top_threshold[t], ex)
        for g in range(n_tiles):
            first = g * LANES
            n_lanes = min(LANES, n - first)
            lanes = xt[g * tile:]
            if nan_tile[g]:
                for j in range(n_lanes):
                    leaf = rec[_descend_nan(lanes, rec, thr, nan_right, roots[t], j) + one]
                    for k in range(n_values):
                        out[start + first + j, k] += leaf_value[leaf, k]
                continue
            _descend(lanes, rec, thr, entry[t], ex, first, leaves)
            if n_values == 1:  # the common cases spelled out: no inner loop per row
                for j in range(n_lanes):
                    out[start + first + j, 0] += leaf_value[rec[leaves[j] + one], 0]
            elif n_values == 2:
                for j in range(n_lanes):
                    leaf = rec[leaves[j] + one]
                    out[start + first + j, 0] += leaf_value[leaf, 0]
                    out[start + first + j, 1] += leaf_value[leaf, 1]
            else:
                for j in range(n_lanes):
                    leaf = rec[leaves[j] + one]
                    for k in range(n_values):
                        out[start + first + j, k] += leaf_value[leaf, k]
    for r in range(start, stop):
        for k in range(n_values):
            out[r, k] /= len(roots)


@njit(cache=True)
def _predict_serial(X, rec, thr, nan_right, leaf_value, roots, top_feature, top_threshold, entry, out, block):
    """Blocks of ``block`` (<= BLOCK) rows, one after the other."""
    n_rows = X.shape[0]
    n_tiles = (block + LANES - 1) // LANES
    xt = np.empty(n_tiles * LANES * (X.shape[1] + 2), dtype=np.float32)
    ex = np.empty(n_tiles * LANES, dtype=np.uint32)
    for start in range(0, n_rows, block):
        _predict_block(X, start, min(start + block, n_rows), xt, ex, rec, thr, nan_right, leaf_value, roots,
                       top_feature, top_threshold, entry, out)


@njit(cache=True, parallel=True)
def _predict_parallel(X, rec, thr, nan_right, leaf_value, roots, top_feature, top_threshold, entry, out, chunk):
    """Blocks of ``chunk`` (<= BLOCK) rows over the threads."""
    n_rows = X.shape[0]
    n_blocks = (n_rows + chunk - 1) // chunk
    n_tiles = (chunk + LANES - 1) // LANES
    for b in prange(n_blocks):
        start = b * chunk
        xt = np.empty(n_tiles * LANES * (X.shape[1] + 2), dtype=np.float32)
        ex = np.empty(n_tiles * LANES, dtype=np.uint32)
        _predict_block(X, start, min(start + chunk, n_rows), xt, ex, rec, thr, nan_right, leaf_value, roots,
                       top_feature, top_threshold, entry, out)
