"""Flat-tree forests: predictions equal scikit-learn's; model files round-trip without pickle."""

import dataclasses
import json

import numpy as np
import pytest
import tables
from iactpipe.errors import DataError
from iactpipe.models import forest as forest_module
from iactpipe.models.forest import flatten_forest, predict_forest
from iactpipe.models.model_file import ModelSet, is_model_file, read_model, write_model
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor


def _data(n=3000, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)) * np.array([1, 10, 100, 0.01, 1e3, 1])[:n_features]
    y = np.sin(X[:, 0]) + X[:, 1] / 10 + rng.normal(size=n) * 0.2
    return X, y, rng


def _close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [RandomForestRegressor, ExtraTreesRegressor])
def test_regressor_equals_sklearn(cls):
    X, y, rng = _data()
    model = cls(n_estimators=15, min_samples_leaf=3, random_state=1).fit(X, y)
    flat = flatten_forest(model)
    X_test = rng.normal(size=(2000, X.shape[1])) * X.std(axis=0)
    _close(flat.predict(X_test)[:, 0], model.predict(X_test))
    # thresholds sit between float32 values: inputs exactly on / next to them must agree too
    on_threshold = np.tile(X_test[:50], (1, 1))
    inner = flat.feature >= 0
    picks = rng.choice(np.flatnonzero(inner), 50)
    on_threshold[np.arange(50), flat.feature[picks]] = flat.threshold[picks]
    _close(flat.predict(on_threshold)[:, 0], model.predict(on_threshold))


def test_multi_output_regressor():
    X, y, rng = _data()
    Y = np.column_stack([y, -2 * y + X[:, 2]])
    model = RandomForestRegressor(n_estimators=8, random_state=2).fit(X, Y)
    _close(flatten_forest(model).predict(X[:500]), model.predict(X[:500]))


@pytest.mark.parametrize("cls", [RandomForestClassifier, ExtraTreesClassifier])
def test_classifier_equals_sklearn(cls):
    X, y, rng = _data(seed=3)
    labels = np.where(y > 0.5, 101, np.where(y < -0.5, 0, 1))  # three classes, unsorted ids
    model = cls(n_estimators=12, max_depth=12, random_state=3).fit(X, labels)
    flat = flatten_forest(model)
    X_test = rng.normal(size=(1500, X.shape[1])) * X.std(axis=0)
    _close(flat.predict_proba(X_test), model.predict_proba(X_test))
    assert list(flat.classes) == [0, 1, 101]
    positive = list(model.classes_).index(101)
    _close(flat.positive_score(X_test, 101), model.predict_proba(X_test)[:, positive])
    with pytest.raises(ValueError, match="7"):
        flat.positive_score(X_test, 7)


def test_missing_values_follow_sklearn():
    X, y, rng = _data(seed=4)
    X[rng.random(X.shape) < 0.05] = np.nan  # trained with NaNs: nodes learn where NaN goes
    model = RandomForestRegressor(n_estimators=10, random_state=4).fit(X, y)
    X_test = X[:800].copy()
    X_test[rng.random(X_test.shape) < 0.2] = np.nan
    flat = flatten_forest(model)
    _close(flat.predict(X_test)[:, 0], model.predict(X_test))
    np.testing.assert_array_equal(flat.predict(X_test, n_threads=2), flat.predict(X_test))
    _close(flat.predict(X_test[3:4])[:, 0], model.predict(X_test[3:4]))


def test_few_missing_values_among_many_rows():
    """A few rows with NaNs among many: their tiles take the per-row NaN path, the others the lockstep one."""
    X, y, rng = _data(n=2000, seed=11)
    X[rng.random(X.shape) < 0.05] = np.nan
    model = RandomForestClassifier(n_estimators=6, random_state=11).fit(X, y > 0)
    X_test = rng.normal(size=(200, X.shape[1])) * np.nanstd(X, axis=0)
    X_test[[5, 40, 41, 199], :2] = np.nan  # in tiles 0, 2 and 12 of 13; the forest sends some NaNs left, some right
    flat = flatten_forest(model)
    _close(flat.predict_proba(X_test), model.predict_proba(X_test))
    _close(flat.predict_proba(X_test, n_threads=2), model.predict_proba(X_test))


def test_input_types():
    """float32, float64 (any order or byte order) and integer inputs: all cast to float32 like scikit-learn."""
    X, y, rng = _data(n=1000, seed=12)
    model = ExtraTreesRegressor(n_estimators=5, random_state=12).fit(X, y)
    flat = flatten_forest(model)
    X_test = rng.normal(size=(50, X.shape[1])) * X.std(axis=0) * 3
    for variant in (X_test, X_test.astype(np.float32), np.asfortranarray(X_test), X_test.astype(">f8"),
                    np.round(X_test).astype(np.int64), X_test[::-1]):
        _close(flat.predict(variant)[:, 0], model.predict(variant))


def test_threads_give_identical_results():
    X, y, _ = _data(n=5000)
    flat = flatten_forest(ExtraTreesRegressor(n_estimators=10, random_state=0).fit(X, y))
    np.testing.assert_array_equal(predict_forest(flat, X, n_threads=2), predict_forest(flat, X, n_threads=1))


@pytest.mark.parametrize("params", [
    dict(max_depth=None, min_samples_leaf=1),  # deep, unbalanced (bootstrap, noisy target)
    dict(max_depth=1),  # stumps: leaves above the vectorised top levels
    dict(max_depth=3),
    dict(max_depth=6, min_samples_leaf=300),  # leaves at mixed depths around the top levels
])
def test_tree_shapes_and_row_counts(params):
    X, y, rng = _data(n=2500, seed=5)
    model = RandomForestRegressor(n_estimators=6, random_state=5, **params).fit(X, y)
    depths = [est.tree_.max_depth for est in model.estimators_]
    if params["max_depth"] is None:
        assert min(depths) >= 15
    flat = flatten_forest(model)
    X_test = rng.normal(size=(97, X.shape[1])) * X.std(axis=0)
    for n in (1, 2, 23, 24, 25, 48, 97):  # partial tiles of rows
        _close(flat.predict(X_test[:n])[:, 0], model.predict(X_test[:n]))


def test_single_leaf_trees():
    X, _, _ = _data(n=300)
    for y in (np.full(300, 2.5), np.r_[np.full(299, 1.0), 3.0]):  # constant, and (bootstrap) mostly constant
        model = ExtraTreesRegressor(n_estimators=5, random_state=0, bootstrap=True).fit(X, y)
        assert min(est.tree_.node_count for est in model.estimators_) == 1
        _close(flatten_forest(model).predict(X[:30])[:, 0], model.predict(X[:30]))


def test_blocks_and_threads(monkeypatch):
    """Rows split into many blocks (unequal tiles) and over threads: identical results."""
    X, y, rng = _data(n=3000, seed=6)
    labels = np.where(y > 0.5, 2, np.where(y < -0.5, 0, 1))
    model = RandomForestClassifier(n_estimators=7, random_state=6).fit(X, labels)
    flat = flatten_forest(model)
    X_test = rng.normal(size=(1001, X.shape[1])) * X.std(axis=0)
    whole = flat.predict_proba(X_test)
    _close(whole, model.predict_proba(X_test))
    monkeypatch.setattr(forest_module, "BLOCK", 50)
    np.testing.assert_array_equal(flat.predict_proba(X_test), whole)
    np.testing.assert_array_equal(flat.predict_proba(X_test, n_threads=2), whole)


def _renumbered(flat, rng):
    """The same forest with every tree's nodes (but the root) numbered in a random order."""
    parts = {k: [] for k in ("feature", "threshold", "left", "right", "missing_left", "value")}
    for t in range(flat.n_trees):
        lo, hi = flat.node_offset[t], flat.node_offset[t + 1]
        new_id = np.r_[0, 1 + rng.permutation(hi - lo - 1)]
        old_at = np.argsort(new_id)  # old node id of each new id
        for name in ("feature", "threshold", "missing_left", "value"):
            parts[name].append(getattr(flat, name)[lo:hi][old_at])
        for name in ("left", "right"):
            child = getattr(flat, name)[lo:hi][old_at]
            parts[name].append(np.where(child == -1, -1, new_id[np.maximum(child, 0)]).astype(np.int32))
    return dataclasses.replace(flat, **{k: np.concatenate(v) for k, v in parts.items()})


def test_node_order_does_not_matter():
    """Inference lays trees out in pre-order itself: best-first trees (max_leaf_nodes, not numbered
    depth-first by scikit-learn) and randomly renumbered trees give the same predictions."""
    X, y, rng = _data(n=2000, seed=7)
    model = RandomForestRegressor(n_estimators=5, max_leaf_nodes=60, random_state=7).fit(X, y)
    tree = model.estimators_[0].tree_
    assert (tree.children_left[tree.children_left != -1] != np.flatnonzero(tree.children_left != -1) + 1).any()
    flat = flatten_forest(model)
    X_test = rng.normal(size=(300, X.shape[1])) * X.std(axis=0)
    _close(flat.predict(X_test)[:, 0], model.predict(X_test))
    deep = flatten_forest(RandomForestRegressor(n_estimators=4, random_state=8).fit(X, y))
    for forest in (flat, deep):
        np.testing.assert_array_equal(_renumbered(forest, rng).predict(X_test), forest.predict(X_test))


@pytest.mark.parametrize("n_values", [1, 2, 3, 4])
def test_value_counts_and_partial_tiles(n_values):
    """Leaf values summed for 1, 2 (binary classifier) and more columns; tiles of 1 to 33 rows."""
    X, y, rng = _data(n=1500, seed=9)
    if n_values == 1:
        model = ExtraTreesRegressor(n_estimators=6, random_state=9).fit(X, y)
    elif n_values == 4:
        model = RandomForestRegressor(n_estimators=6, random_state=9).fit(X, np.column_stack([y, -y, X[:, :2]]))
    else:
        labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, n_values + 1)[1:-1]))
        model = ExtraTreesClassifier(n_estimators=6, random_state=9).fit(X, labels)
    flat = flatten_forest(model)
    assert flat.n_values == n_values
    X_test = rng.normal(size=(33, X.shape[1])) * X.std(axis=0)
    predict = model.predict_proba if n_values in (2, 3) else model.predict
    for n in (1, 15, 16, 17, 33):
        ours = flat.predict(X_test[:n])
        _close(ours if n_values > 1 else ours[:, 0], predict(X_test[:n]))


def test_extreme_values_and_many_features():
    """Values beyond every threshold (the float32 extremes) go where scikit-learn sends them, and ±inf
    (which scikit-learn refuses) the same way; no limit at 255 features."""
    rng = np.random.default_rng(10)
    X = rng.normal(size=(600, 300))
    y = X[:, 0] + X[:, 299] + 0.1 * rng.normal(size=600)
    model = ExtraTreesRegressor(n_estimators=4, max_features=1.0, random_state=10).fit(X, y)
    flat = flatten_forest(model)
    assert flat.feature.max() >= 255
    X_test = rng.normal(size=(40, 300))
    big = float(np.finfo(np.float32).max)
    X_test[::3, flat.feature[0]] = big
    X_test[1::3, flat.feature[0]] = -big
    X_test[2::5, 299] = big
    expected = model.predict(X_test)
    _close(flat.predict(X_test)[:, 0], expected)
    X_inf = np.where(np.abs(X_test) == big, np.sign(X_test) * np.inf, X_test)
    _close(flat.predict(X_inf)[:, 0], expected)
    _close(flat.predict(X_inf, n_threads=2)[:, 0], expected)


def test_too_many_nodes(monkeypatch):
    X, y, _ = _data(n=300)
    flat = flatten_forest(RandomForestRegressor(n_estimators=2, random_state=0).fit(X, y))
    monkeypatch.setattr(forest_module, "MAX_WORDS", 3 * flat.n_nodes)
    with pytest.raises(ValueError, match=f"forest too large for 32-bit node records \\({flat.n_nodes} nodes"):
        flat.predict(X)


@pytest.mark.parametrize("damage", ["cycle", "child out of range", "feature out of range", "unreached node"])
def test_malformed_trees_are_refused(damage):
    """Node arrays that are not a tree (e.g. from a damaged model file) give a clear error, not a crash."""
    X, y, _ = _data(n=300)
    flat = flatten_forest(RandomForestRegressor(n_estimators=3, max_depth=4, random_state=0).fit(X, y))
    inner = np.flatnonzero(flat.left[flat.node_offset[1]:flat.node_offset[2]] != -1)[1]  # tree 1, not the root
    at = flat.node_offset[1] + inner
    if damage == "cycle":
        flat.left[at] = inner
    elif damage == "child out of range":
        flat.right[at] = flat.node_offset[2] - flat.node_offset[1]
    elif damage == "feature out of range":
        flat.feature[at] = flat.n_features
    else:  # a leaf's subtree detached: its nodes are never reached
        flat.left[at] = flat.right[at] = -1
    with pytest.raises(ValueError, match="tree 1 of the forest is malformed"):
        flat.predict(X)


def test_wrong_feature_count_and_unsupported_estimator():
    X, y, _ = _data(n=200)
    flat = flatten_forest(RandomForestRegressor(n_estimators=2, random_state=0).fit(X, y))
    with pytest.raises(ValueError, match="6 features"):
        flat.predict(X[:, :5])
    from sklearn.ensemble import GradientBoostingRegressor

    with pytest.raises(TypeError, match="GradientBoostingRegressor"):
        flatten_forest(GradientBoostingRegressor(n_estimators=2).fit(X, y))


def test_real_dl1_features(sim_dl1_sample):
    """Energy regression on the simulated DL1 parameters: same predictions as scikit-learn."""
    with tables.open_file(sim_dl1_sample["gamma"]) as h5:
        tels = [n for n in h5.root.dl1.event.telescope.parameters]
        params = np.concatenate([t.read() for t in tels])
    features = ["hillas_intensity", "hillas_length", "hillas_width", "hillas_r", "leakage_intensity_width_2",
                "concentration_cog", "morphology_n_pixels", "timing_slope"]
    X = np.column_stack([params[f] for f in features]).astype(np.float64)
    X = X[np.isfinite(X).all(axis=1)]
    y = np.log10(X[:, 0]) + 0.1 * X[:, 1]
    model = ExtraTreesRegressor(n_estimators=20, min_samples_leaf=2, random_state=0).fit(X, y)
    _close(flatten_forest(model).predict(X)[:, 0], model.predict(X))


def _model_set(kind="gammaness"):
    X, y, _ = _data(n=600)
    labels = (y > 0).astype(int) * 101
    forests = {
        "LST_LST_LSTCam": {"classifier": flatten_forest(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, labels))},
        "MST_MST_FlashCam": {"classifier": flatten_forest(ExtraTreesClassifier(n_estimators=4, random_state=0).fit(X, labels))},
    }
    meta = {"kind": kind, "features": [f"f{i}" for i in range(6)], "positive_class": 0,
            "cv_metrics": {"LST_LST_LSTCam": {"ROC AUC": [0.9, 0.8]}}, "config": {"a": {"b": [1, 2]}}}
    return ModelSet(forests=forests, metadata=meta), X


def test_model_file_round_trip(tmp_path):
    model, X = _model_set()
    path = tmp_path / "model.h5"
    write_model(path, model)
    assert is_model_file(path)
    back = read_model(path, kind="gammaness")
    assert back.metadata["features"] == model.metadata["features"]
    assert back.metadata["cv_metrics"] == model.metadata["cv_metrics"]
    assert back.tel_types == sorted(model.forests)
    for tel_type, comps in model.forests.items():
        ours, theirs = back.forests[tel_type]["classifier"], comps["classifier"]
        for name in ("node_offset", "feature", "threshold", "left", "right", "missing_left", "value", "classes"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
        assert ours.estimator == theirs.estimator and ours.params == theirs.params
        np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))
    # nothing pickled: every leaf is a numeric array, a unicode VLArray or an attribute of plain types
    with tables.open_file(path) as h5:
        for node in h5.walk_nodes("/", "Leaf"):
            assert not isinstance(getattr(node, "atom", None), tables.ObjectAtom)
        json.loads(h5.root.model.metadata[0])


def test_model_file_errors(tmp_path):
    not_model = tmp_path / "plain.h5"
    with tables.open_file(not_model, "w") as h5:
        h5.create_array("/", "x", np.arange(3))
    with pytest.raises(DataError, match="plain.h5: not an iactpipe model file"):
        read_model(not_model)
    text = tmp_path / "model.pkl"
    text.write_bytes(b"\x80\x04 not hdf5")
    with pytest.raises(DataError, match="model.pkl: not an iactpipe model file"):
        read_model(text)
    model, _ = _model_set()
    path = tmp_path / "m.h5"
    write_model(path, model)
    with pytest.raises(DataError, match="is a gammaness model, expected a energy model"):
        read_model(path, kind="energy")
    with tables.open_file(path, "a") as h5:  # a child index pointing outside its tree
        right = h5.get_node("/model/forests/LST_LST_LSTCam/classifier/right")
        right[int(np.flatnonzero(right[:] > 0)[0])] = 10**6
    with pytest.raises(DataError, match="m.h5: corrupt iactpipe model file: LST_LST_LSTCam classifier: tree 0 .* malformed"):
        read_model(path)
    model.metadata["kind"] = "energy"  # an energy model needs "regressor" forests
    with pytest.raises(ValueError, match="regressor"):
        write_model(tmp_path / "bad.h5", model)
