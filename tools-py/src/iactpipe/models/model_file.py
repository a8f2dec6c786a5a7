"""Model files: forests as flat arrays plus JSON metadata in HDF5 (no pickle anywhere).

Layout (see docs/models.md)::

    /                               attrs IACTPIPE_MODEL_FORMAT = "iactpipe-model",
                                          IACTPIPE_MODEL_FORMAT_VERSION = 1,
                                          IACTPIPE_MODEL_KIND, IACTPIPE_CV_METRICS (JSON copy)
    /model/metadata                 VLArray of one UTF-8 JSON string: kind, features, tel_types, ...
    /model/forests/<tel_type>/<component>/
        node_offset, feature, threshold, left, right, missing_left, value, [classes]
                                    attrs task, estimator, n_features, params (JSON)

``component`` is ``regressor`` (energy), ``classifier`` (gammaness), ``norm`` and ``sign`` (disp).
Reading uses only numeric arrays and strings: a model file cannot execute code.
"""

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tables

from ..errors import DataError
from ..io.tables import FILTERS
from ._json import json_default
from .forest import FlatForest, _packed

__all__ = ["ModelSet", "write_model", "read_model", "is_model_file", "MODEL_FORMAT", "MODEL_FORMAT_VERSION"]

MODEL_FORMAT = "iactpipe-model"
MODEL_FORMAT_VERSION = 1
_ARRAYS = ("node_offset", "feature", "threshold", "left", "right", "missing_left", "value")
_DTYPES = {"node_offset": np.int64, "feature": np.int32, "threshold": np.float64, "left": np.int32,
           "right": np.int32, "missing_left": np.uint8, "value": np.float64}
KINDS = {"energy": ("regressor",), "gammaness": ("classifier",), "disp": ("norm", "sign")}


@dataclass
class ModelSet:
    """Forests per telescope type (and component) with the metadata needed to apply them.

    ``metadata`` holds at least ``kind`` (energy / gammaness / disp), ``features`` (in the
    order of the forests' columns) and ``tel_types``; the training steps add the target,
    classes, estimator and hyper-parameters, training data, config, versions and CV metrics.
    """

    forests: dict  # {tel_type: {component: FlatForest}}
    metadata: dict = field(default_factory=dict)

    @property
    def kind(self):
        return self.metadata["kind"]

    @property
    def features(self):
        return list(self.metadata["features"])

    @property
    def tel_types(self):
        return list(self.forests)


def write_model(path, model):
    """Write a :class:`ModelSet` to a new HDF5 file at ``path``."""
    meta = dict(model.metadata)
    meta.setdefault("tel_types", sorted(model.forests))
    _check_consistent(model, meta)
    with tables.open_file(path, "w", filters=FILTERS) as h5, warnings.catch_warnings():
        warnings.simplefilter("ignore", tables.NaturalNameWarning)  # tel types such as LST_LSTN-design_...
        h5.root._v_attrs["IACTPIPE_MODEL_FORMAT"] = MODEL_FORMAT
        h5.root._v_attrs["IACTPIPE_MODEL_FORMAT_VERSION"] = MODEL_FORMAT_VERSION
        h5.root._v_attrs["IACTPIPE_MODEL_KIND"] = meta["kind"]
        # the CV metrics also as a root attribute, for a quick look (h5dump, the demo)
        h5.root._v_attrs["IACTPIPE_CV_METRICS"] = json.dumps(meta.get("cv_metrics", {}), sort_keys=True,
                                                             default=json_default)
        group = h5.create_group("/", "model", title="iactpipe reconstruction model")
        records = h5.create_vlarray(group, "metadata", tables.VLUnicodeAtom(), title="model metadata (JSON)",
                                   filters=tables.Filters(complevel=5, complib="blosc:zstd"))
        records.append(json.dumps(meta, sort_keys=True, default=json_default))
        for tel_type, components in model.forests.items():
            for component, forest in components.items():
                where = h5.create_group(f"/model/forests/{tel_type}", component, createparents=True)
                for name in _ARRAYS:
                    data = np.ascontiguousarray(getattr(forest, name), dtype=_DTYPES[name])
                    h5.create_carray(where, name, obj=data, filters=FILTERS)
                if forest.classes is not None:
                    h5.create_array(where, "classes", obj=np.asarray(forest.classes))
                attrs = where._v_attrs
                attrs["task"] = forest.task
                attrs["estimator"] = forest.estimator
                attrs["n_features"] = int(forest.n_features)
                attrs["params"] = json.dumps(forest.params, sort_keys=True, default=json_default)


def _check_consistent(model, meta):
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {sorted(KINDS)}, got {kind!r}")
    for tel_type, components in model.forests.items():
        if set(components) != set(KINDS[kind]):
            raise ValueError(f"{tel_type}: a {kind} model needs the forests {KINDS[kind]}, got {sorted(components)}")
        for forest in components.values():
            if forest.n_features != len(meta["features"]):
                raise ValueError(f"{tel_type}: forest has {forest.n_features} features, metadata lists "
                                 f"{len(meta['features'])}")


def is_model_file(path):
    """True if ``path`` is an HDF5 file carrying the iactpipe model format attribute."""
    try:
        with tables.open_file(path, "r") as h5:
            attrs = h5.root._v_attrs
            return "IACTPIPE_MODEL_FORMAT" in attrs._v_attrnames and _text(attrs["IACTPIPE_MODEL_FORMAT"]) == MODEL_FORMAT
    except (OSError, tables.HDF5ExtError, ValueError):
        return False


def _text(value):
    return value.decode() if isinstance(value, bytes | np.bytes_) else str(value)


def read_model(path, kind=None):
    """Read a model file; ``kind`` (energy / gammaness / disp) checks what it holds.

    Raises :class:`~iactpipe.errors.DataError` naming the file if it is not a model file
    (or not of the expected kind).
    """
    path = Path(path)
    try:
        h5 = tables.open_file(path, "r")
    except (OSError, tables.HDF5ExtError, ValueError):
        raise DataError(f"{path}: not an iactpipe model file (not a readable HDF5 file)") from None
    with h5:
        attrs = h5.root._v_attrs
        if "IACTPIPE_MODEL_FORMAT" not in attrs._v_attrnames or _text(attrs["IACTPIPE_MODEL_FORMAT"]) != MODEL_FORMAT:
            raise DataError(f"{path}: not an iactpipe model file (no IACTPIPE_MODEL_FORMAT attribute; "
                            "ctapipe's pickled models are not read, on purpose)")
        version = int(attrs["IACTPIPE_MODEL_FORMAT_VERSION"])
        if version > MODEL_FORMAT_VERSION:
            raise DataError(f"{path}: model format version {version} is newer than this iactpipe reads "
                            f"({MODEL_FORMAT_VERSION})")
        try:
            meta = json.loads(h5.get_node("/model/metadata")[0])
            forests = {}
            for tel_type in meta["tel_types"]:
                forests[tel_type] = {}
                for component in KINDS[meta["kind"]]:
                    forests[tel_type][component] = _read_forest(h5, f"/model/forests/{tel_type}/{component}")
        except (tables.NoSuchNodeError, KeyError, IndexError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: incomplete or corrupt iactpipe model file ({err})") from None
    if kind is not None and meta["kind"] != kind:
        raise DataError(f"{path}: is a {meta['kind']} model, expected a {kind} model")
    for tel_type, components in forests.items():
        for component, forest in components.items():
            try:
                _packed(forest)  # the inference layout (built once, cached): checks that every tree is a tree
            except ValueError as err:
                raise DataError(f"{path}: corrupt iactpipe model file: {tel_type} {component}: {err}") from None
    return ModelSet(forests=forests, metadata=meta)


def _read_forest(h5, where):
    group = h5.get_node(where)
    arrays = {name: np.ascontiguousarray(h5.get_node(group, name).read(), dtype=_DTYPES[name]) for name in _ARRAYS}
    classes = h5.get_node(group, "classes").read() if "classes" in group else None
    attrs = group._v_attrs
    return FlatForest(
        task=_text(attrs["task"]),
        n_features=int(attrs["n_features"]),
        classes=classes,
        estimator=_text(attrs["estimator"]),
        params=json.loads(_text(attrs["params"])),
        **arrays,
    )
