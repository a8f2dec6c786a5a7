cwlVersion: v1.2
class: Workflow
label: Reconstruction model training - energy, gammaness and disp models with cross-validation
doc: |
  Reconstruction Model Training (DPPS-UC-130-1.3, 1.4): the background DL2 file is split into a training and a
  test part (iactpipe-split, seeded), then the energy regressor and the disp models are trained on the gamma
  files and the gamma/hadron classifier on the gammas against the training part of the background, each with
  k-fold cross-validation (iactpipe-train-energy, -train-gammaness, -train-disp; the three run in parallel, as
  none of the default feature lists uses a reconstructed energy). The test part of the background is an output,
  for the IRF generation. Models are portable HDF5 files (no pickle).
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 4096
  - class: MultipleInputFeatureRequirement
inputs:
  gamma:
    type: File[]
    doc: DL2 files of diffuse simulated gammas (training sample of all three models).
  background:
    type: File
    doc: DL2 file of simulated protons (or protons and electrons merged), split into training and test parts.
  split_fraction:
    type: float?
    doc: Expected fraction of the background events in the training part (default 0.5).
  split_seed:
    type: int?
    doc: Seed of the train/test split (default 0).
  energy_estimator:
    type: string?
    doc: Forest of the energy model - ExtraTreesRegressor (default) or RandomForestRegressor.
  gammaness_estimator:
    type: string?
    doc: Forest of the gammaness model - ExtraTreesClassifier (default) or RandomForestClassifier.
  n_events:
    type: int?
    doc: Telescope events drawn for training per telescope type and model (default - all).
  cv_folds:
    type: int?
    doc: Folds of the cross-validation (default 5; 0 - none).
  seed:
    type: int?
    doc: Seed of the event sampling and of the forests (default 0).
  energy_config:
    type: File[]?
    doc: Configuration files of iactpipe-train-energy (schemas/config/train_energy.yaml).
  gammaness_config:
    type: File[]?
    doc: Configuration files of iactpipe-train-gammaness (schemas/config/train_gammaness.yaml).
  disp_config:
    type: File[]?
    doc: Configuration files of iactpipe-train-disp (schemas/config/train_disp.yaml).
  split_config:
    type: File[]?
    doc: Configuration files of iactpipe-split (schemas/config/split.yaml).
  numba_cache_dir:
    type: string
    default: ""
    doc: Directory for numba's compiled-kernel cache shared by all steps (empty - numba's default location).
steps:
  split_background:
    run: ../steps/split.cwl
    in:
      input: background
      fraction: split_fraction
      seed: split_seed
      config: split_config
      numba_cache_dir: numba_cache_dir
    out: [train, test, provenance_log]
  train_energy:
    run: ../steps/train_energy.cwl
    in:
      inputs: gamma
      estimator: energy_estimator
      n_events: n_events
      cv_folds: cv_folds
      seed: seed
      config: energy_config
      numba_cache_dir: numba_cache_dir
    out: [model, cross_validation, provenance_log]
  train_gammaness:
    run: ../steps/train_gammaness.cwl
    in:
      signal: gamma
      background:
        source: [split_background/train]
        linkMerge: merge_flattened
      estimator: gammaness_estimator
      n_events: n_events
      cv_folds: cv_folds
      seed: seed
      config: gammaness_config
      numba_cache_dir: numba_cache_dir
    out: [model, cross_validation, provenance_log]
  train_disp:
    run: ../steps/train_disp.cwl
    in:
      inputs: gamma
      n_events: n_events
      cv_folds: cv_folds
      seed: seed
      config: disp_config
      numba_cache_dir: numba_cache_dir
    out: [model, cross_validation, provenance_log]
outputs:
  energy_model:
    type: File
    doc: Energy model file.
    outputSource: train_energy/model
  gammaness_model:
    type: File
    doc: Gammaness model file.
    outputSource: train_gammaness/model
  disp_model:
    type: File
    doc: Disp model file.
    outputSource: train_disp/model
  cross_validation:
    type: File[]
    doc: Cross-validation predictions of the energy, gammaness and disp models (in this order).
    outputSource: [train_energy/cross_validation, train_gammaness/cross_validation, train_disp/cross_validation]
    linkMerge: merge_flattened
  background_train:
    type: File
    doc: Training part of the background file.
    outputSource: split_background/train
  background_test:
    type: File
    doc: Test part of the background file (not seen by the models; IRF generation input).
    outputSource: split_background/test
  provenance_logs:
    type: File[]
    doc: Provenance records of every step (JSON).
    outputSource: [split_background/provenance_log, train_energy/provenance_log, train_gammaness/provenance_log, train_disp/provenance_log]
    linkMerge: merge_flattened
