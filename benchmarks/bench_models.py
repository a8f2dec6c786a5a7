"""Models: flat-tree numba inference against scikit-learn's predict, and model file size against joblib.

The same fitted forests (ExtraTrees as in ctapipe's example configuration, and RandomForest) on the same
input rows: iactpipe's ``FlatForest.predict`` (one thread) against scikit-learn's ``predict`` /
``predict_proba`` with ``n_jobs=1``, both timed as the best of 3 runs (15 with ``quick``: short runs)
in CPU time of this process, the two alternating run by run so that both see the same load (the machine
may be shared). Predictions are checked to agree within 1e-9 relative before timing.
Sizes: the iactpipe model file (HDF5, zstd) of one forest against ``joblib.dump`` of the same fitted
forest, plain and with ``compress=True`` (what ctapipe's ``write`` uses).
"""

import tempfile
import time
from pathlib import Path

import numpy as np


def _data(n_train, n_features, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train, n_features))
    y = X[:, 0] + 0.5 * np.sin(2 * X[:, 1]) + 0.3 * X[:, 2] * X[:, 3] + 0.2 * rng.normal(size=n_train)
    return X, y, rng


def _best_cpu(fns, repeat=3):
    """Best CPU time of each function over ``repeat`` rounds, the functions alternating within a round."""
    best = [np.inf] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - t0)
    return best


def run(quick=False):
    import joblib
    from iactpipe.models.forest import flatten_forest
    from iactpipe.models.model_file import ModelSet, write_model
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier

    n_train = 20_000 if quick else 200_000
    n_predict = 20_000 if quick else 200_000
    n_trees = 50 if quick else 100
    n_features = 20
    X, y, rng = _data(n_train, n_features)
    X_new = rng.normal(size=(n_predict, n_features))
    cases = [
        ("ExtraTreesRegressor", ExtraTreesRegressor(n_estimators=n_trees, min_samples_leaf=5, random_state=0), y),
        ("RandomForestClassifier", RandomForestClassifier(n_estimators=n_trees, min_samples_leaf=5, random_state=0),
         (y > 0).astype(int)),
    ]
    rows = []
    for name, model, target in cases:
        model.fit(X, target)
        model.n_jobs = 1
        flat = flatten_forest(model)
        sk_predict = model.predict_proba if hasattr(model, "predict_proba") else model.predict
        ours = flat.predict(X_new)
        ref = sk_predict(X_new)
        ours = ours if ref.ndim == 2 else ours[:, 0]
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
        t_ours, t_ref = _best_cpu([lambda f=flat: f.predict(X_new), lambda p=sk_predict: p(X_new)], 15 if quick else 3)
        label = f"{name}, {n_trees} trees, {flat.n_nodes / n_trees:,.0f} nodes/tree, {n_features} features"
        rows.append(dict(benchmark=f"forest inference, {label}", ours=n_predict / t_ours, reference=n_predict / t_ref,
                         unit="rows/s", notes="1 thread each; reference: scikit-learn predict, n_jobs=1"))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            kind, component = ("gammaness", "classifier") if "Classifier" in name else ("energy", "regressor")
            meta = {"kind": kind, "features": [f"f{i}" for i in range(n_features)]}
            write_model(tmp / "model.h5", ModelSet(forests={"T": {component: flat}}, metadata=meta))
            joblib.dump(model, tmp / "plain.pkl")
            joblib.dump(model, tmp / "compressed.pkl", compress=True)
            size = (tmp / "model.h5").stat().st_size / 1e6
            plain = (tmp / "plain.pkl").stat().st_size / 1e6
            compressed = (tmp / "compressed.pkl").stat().st_size / 1e6
        rows.append(dict(benchmark=f"model file size, {label}", ours=size, reference=compressed, unit="MB",
                         notes=f"reference: joblib.dump(compress=True) as ctapipe writes; plain joblib {plain:.1f} MB "
                               f"(ratio {size / plain:.2f})"))
    return rows


if __name__ == "__main__":
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(row)
