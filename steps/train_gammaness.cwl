cwlVersion: v1.2
class: CommandLineTool
label: Train gamma/hadron classifiers (one forest per telescope type)
doc: |
  Train scikit-learn forest classifiers of signal (gammas) against background (protons, electrons), one per
  telescope type, on DL2 files of simulations (DPPS-UC-130-1.4), with a configurable signal fraction and k-fold
  cross-validation. Writes a portable iactpipe model file (no pickle), the cross-validation predictions and the
  provenance record, named after the first signal file.
baseCommand: iactpipe-train-gammaness
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 4096
  - class: EnvVarRequirement
    envDef:
      NUMBA_CACHE_DIR: $(inputs.numba_cache_dir)
      NUMBA_NUM_THREADS: "1"
      OMP_NUM_THREADS: "1"
inputs:
  # data
  signal:
    type: File[]
    doc: DL2 files of the signal class (simulated gammas).
    inputBinding:
      prefix: --signal
  background:
    type: File[]
    doc: DL2 files of the background class (simulated protons, electrons).
    inputBinding:
      prefix: --background
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/train_gammaness.yaml - features, quality query, hyper-parameters), applied in order.
  estimator:
    type: string?
    doc: scikit-learn forest - ExtraTreesClassifier (default) or RandomForestClassifier.
    inputBinding:
      prefix: --estimator
  signal_fraction:
    type: float?
    doc: n_signal / (n_signal + n_background) of the training sample (default 0.5).
    inputBinding:
      prefix: --signal-fraction
  features:
    type: string[]?
    doc: Feature columns of the models, in order (default - ctapipe's example list, see the config schema).
    inputBinding:
      prefix: --features
  n_events:
    type: int?
    doc: Telescope events drawn at random (seeded) for training, per telescope type (default - all).
    inputBinding:
      prefix: --n-events
  cv_folds:
    type: int?
    doc: Folds of the k-fold cross-validation (default 5; 0 - none).
    inputBinding:
      prefix: --cv-folds
  seed:
    type: int?
    doc: Seed of the event sampling and of the forests (default 0).
    inputBinding:
      prefix: --seed
  n_jobs:
    type: int?
    doc: Threads for scikit-learn's training (default one; -1 - all cores).
    inputBinding:
      prefix: --n-jobs
  chunk_size:
    type: int?
    doc: Subarray events read at once (default 100000).
    inputBinding:
      prefix: --chunk-size
  prefix:
    type: string?
    doc: Name of the model in the DL2 columns (default - the estimator name; disp for disp models).
    inputBinding:
      prefix: --prefix
  numba_cache_dir:
    type: string
    default: ""
    doc: >
      Directory for numba's compiled-kernel cache, shared by all runs (e.g. on a node's local disk).
      Empty (default) uses numba's default location: the installation's __pycache__ when writable, else a per-user cache.
  log_level:
    type: string?
    doc: Logging verbosity (DEBUG, INFO, WARNING, ERROR).
    inputBinding:
      prefix: --log-level
arguments:
  - prefix: --output
    valueFrom: $(inputs.signal[0].nameroot).gammaness_model.h5
  - prefix: --cv-output
    valueFrom: $(inputs.signal[0].nameroot).gammaness_cv.h5
  - prefix: --provenance-log
    valueFrom: $(inputs.signal[0].nameroot).gammaness_model.provenance.json
outputs:
  model:
    type: File
    format: http://edamontology.org/format_3590
    doc: iactpipe model file (HDF5 - flat trees per telescope type and JSON metadata; no pickle).
    outputBinding:
      glob: $(inputs.signal[0].nameroot).gammaness_model.h5
  cross_validation:
    type: File
    format: http://edamontology.org/format_3590
    doc: Cross-validation predictions per telescope type (HDF5, ctapipe's /cv_predictions layout).
    outputBinding:
      glob: $(inputs.signal[0].nameroot).gammaness_cv.h5
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.signal[0].nameroot).gammaness_model.provenance.json
