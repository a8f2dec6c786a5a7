cwlVersion: v1.2
class: Workflow
label: IRF generation - apply models, optimize cuts, compute IRFs over a zenith grid
doc: |
  IRF Generation (DPPS-UC-130-1.6, 1.9): the trained models are applied to independent simulated test samples
  (iactpipe-apply-models), the gammaness and direction cuts are optimised once on the samples of the reference
  zenith - the first of the grid - (iactpipe-optimize-cuts), and the IRFs and performance are computed with these
  cuts for every zenith of the grid (iactpipe-compute-irf, scattered). The gamma, proton and electron lists are
  grouped by zenith: their i-th files belong to the same zenith angle, the first files to the reference zenith. The IRF files carry the zenith (ZEN_PNT) that
  iactpipe-marginalize-irf interpolates over. One set of cuts for all zeniths keeps the interpolated IRF
  consistent with the event selection of iactpipe-dl2-to-dl3.
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 4096
  - class: ScatterFeatureRequirement
  - class: StepInputExpressionRequirement
inputs:
  gamma:
    type: File[]
    doc: DL2 files of simulated gammas, one per zenith of the grid, the reference zenith first (point-like for point-like IRFs).
  proton:
    type: File[]
    doc: DL2 files of simulated protons not used for training, one per zenith, in the order of gamma.
  electron:
    type: File[]
    doc: DL2 files of simulated electrons, one per zenith, in the order of gamma.
  energy_model:
    type: File
    doc: Energy model file (iactpipe-train-energy).
  gammaness_model:
    type: File
    doc: Gammaness model file (iactpipe-train-gammaness).
  disp_model:
    type: File?
    doc: Disp model file (iactpipe-train-disp).
  energy_reconstructor:
    type: string
    default: ExtraTreesRegressor
    doc: Energy table of the applied models (the estimator name of the energy model).
  gh_classifier:
    type: string
    default: ExtraTreesClassifier
    doc: Gammaness table of the applied models (the estimator name of the gammaness model).
  optimize_algorithm:
    type: string?
    doc: Cut optimisation algorithm of iactpipe-optimize-cuts (default - point-source sensitivity).
  cuts_filename:
    type: string
    default: cuts.fits
    doc: Name of the cuts file.
  point_like:
    type: boolean
    default: true
    doc: Point-like IRFs (RAD_MAX; point-like gamma simulations); false - full-enclosure.
  obs_time:
    type: ["null", float, string]
    doc: Observation time of the sensitivity in hours, or with a unit (default 50 h).
  apply_config:
    type: File[]?
    doc: Configuration files of iactpipe-apply-models (schemas/config/apply_models.yaml).
  optimize_config:
    type: File[]?
    doc: Configuration files of iactpipe-optimize-cuts (schemas/config/optimize_cuts.yaml).
  irf_config:
    type: File[]?
    doc: Configuration files of iactpipe-compute-irf (schemas/config/compute_irf.yaml).
  numba_cache_dir:
    type: string
    default: ""
    doc: Directory for numba's compiled-kernel cache shared by all steps (empty - numba's default location).
steps:
  apply_gamma:
    run: ../steps/apply_models.cwl
    scatter: input
    in:
      input: gamma
      energy_model: energy_model
      gammaness_model: gammaness_model
      disp_model: disp_model
      config: apply_config
      numba_cache_dir: numba_cache_dir
    out: [dl2, provenance_log]
  apply_proton:
    run: ../steps/apply_models.cwl
    scatter: input
    in:
      input: proton
      energy_model: energy_model
      gammaness_model: gammaness_model
      disp_model: disp_model
      config: apply_config
      numba_cache_dir: numba_cache_dir
    out: [dl2, provenance_log]
  apply_electron:
    run: ../steps/apply_models.cwl
    scatter: input
    in:
      input: electron
      energy_model: energy_model
      gammaness_model: gammaness_model
      disp_model: disp_model
      config: apply_config
      numba_cache_dir: numba_cache_dir
    out: [dl2, provenance_log]
  optimize_cuts:
    run: ../steps/optimize_cuts.cwl
    in:
      gamma_file:
        source: apply_gamma/dl2
        valueFrom: $(self[0])
      proton_file:
        source: apply_proton/dl2
        valueFrom: $(self[0])
      electron_file:
        source: apply_electron/dl2
        valueFrom: $(self[0])
      output_filename: cuts_filename
      algorithm: optimize_algorithm
      energy_reconstructor: energy_reconstructor
      gh_classifier: gh_classifier
      obs_time: obs_time
      config: optimize_config
      numba_cache_dir: numba_cache_dir
    out: [cuts, provenance_log]
  compute_irf:
    run: ../steps/compute_irf.cwl
    scatter: [gamma_file, proton_file, electron_file]
    scatterMethod: dotproduct
    in:
      cuts: optimize_cuts/cuts
      gamma_file: apply_gamma/dl2
      proton_file: apply_proton/dl2
      electron_file: apply_electron/dl2
      output_filename:
        valueFrom: $(inputs.gamma_file.nameroot).irf.fits
      performance_filename:
        valueFrom: $(inputs.gamma_file.nameroot).performance.fits
      point_like: point_like
      obs_time: obs_time
      config: irf_config
      numba_cache_dir: numba_cache_dir
    out: [irf, performance, provenance_log]
outputs:
  cuts:
    type: File
    doc: Cuts file (GH_CUTS, RAD_MAX, validity ranges) for iactpipe-dl2-to-dl3.
    outputSource: optimize_cuts/cuts
  irfs:
    type: File[]
    doc: IRF file per zenith of the grid (GADF; input of iactpipe-marginalize-irf).
    outputSource: compute_irf/irf
  performance:
    type:
      type: array
      items: ["null", File]
    doc: Performance file per zenith (energy bias and resolution, angular resolution, sensitivity).
    outputSource: compute_irf/performance
  gamma_test:
    type: File[]
    doc: The gamma files of the grid with the model predictions (benchmarks).
    outputSource: apply_gamma/dl2
  proton_test:
    type: File[]
    doc: The proton files of the grid with the model predictions (benchmarks).
    outputSource: apply_proton/dl2
  provenance_logs:
    type: File[]
    doc: Provenance records of every step (JSON).
    outputSource: [apply_gamma/provenance_log, apply_proton/provenance_log, apply_electron/provenance_log, optimize_cuts/provenance_log, compute_irf/provenance_log]
    linkMerge: merge_flattened
