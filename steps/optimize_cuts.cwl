cwlVersion: v1.2
class: CommandLineTool
label: Optimize event selection (gammaness and RAD_MAX cuts)
doc: |
  Compute gammaness and direction (RAD_MAX) cuts per reconstructed-energy bin from simulated DL2 gammas,
  protons and electrons with pyirf - point-source sensitivity optimisation (default) or fixed signal
  efficiencies - after the quality and multiplicity selection of the configuration, with events weighted to
  the CRAB_HEGRA / IRFDOC proton and electron spectra (DPPS-UC-130-1.9). Writes a FITS cuts file
  (QUALITY_CUTS_EXPR, GH_CUTS, VALID_ENERGY, VALID_OFFSET, RAD_MAX; readable by ctapipe-compute-irf too)
  and the provenance record of the run.
baseCommand: iactpipe-optimize-cuts
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
  gamma_file:
    type: File
    doc: DL2 file of simulated gammas (point-like or diffuse) with energy, direction and gammaness.
    inputBinding:
      prefix: --gamma-file
  proton_file:
    type: File?
    doc: DL2 file of simulated protons (needed by the point_source_sensitivity algorithm).
    inputBinding:
      prefix: --proton-file
  electron_file:
    type: File?
    doc: DL2 file of simulated electrons (optional background).
    inputBinding:
      prefix: --electron-file
  output_filename:
    type: string
    default: cuts.fits
    doc: Name of the cuts file (FITS).
    inputBinding:
      prefix: --output
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/optimize_cuts.yaml), applied in order.
  algorithm:
    type: string?
    doc: point_source_sensitivity (default, needs protons) or percentile (fixed signal efficiencies).
    inputBinding:
      prefix: --algorithm
  geometry_reconstructor:
    type: string?
    doc: Direction table /dl2/event/subarray/geometry/<name> (default HillasReconstructor).
    inputBinding:
      prefix: --geometry-reconstructor
  energy_reconstructor:
    type: string?
    doc: Energy table /dl2/event/subarray/energy/<name> (default RandomForestRegressor).
    inputBinding:
      prefix: --energy-reconstructor
  gh_classifier:
    type: string?
    doc: Gammaness table /dl2/event/subarray/particle_type/<name> (default RandomForestClassifier).
    inputBinding:
      prefix: --gh-classifier
  min_multiplicity:
    type: int?
    doc: Keep events reconstructed with at least this many telescopes (default 4).
    inputBinding:
      prefix: --min-multiplicity
  chunk_size:
    type: int?
    doc: Subarray events read at once (default 100000).
    inputBinding:
      prefix: --chunk-size
  obs_time:
    type: [float, string, "null"]
    doc: Observation time of the event weights in hours, or with a unit (e.g. '50 h'; default 50 h).
    inputBinding:
      prefix: --obs-time
  reco_energy_min:
    type: [float, string, "null"]
    doc: Lower edge of the reconstructed-energy bins in TeV (default 0.015).
    inputBinding:
      prefix: --reco-energy-min
  reco_energy_max:
    type: [float, string, "null"]
    doc: Upper edge of the reconstructed-energy bins in TeV (default 150).
    inputBinding:
      prefix: --reco-energy-max
  theta_containment:
    type: float?
    doc: Fraction of the signal inside the direction cut (default 0.68).
    inputBinding:
      prefix: --theta-containment
  gh_efficiency:
    type: float?
    doc: Signal efficiency of the gammaness cut of the percentile algorithm (default 0.68).
    inputBinding:
      prefix: --gh-efficiency
  numba_cache_dir:
    type: string
    default: ""
    doc: >
      Directory for numba's compiled-kernel cache, shared by all runs (e.g. on a node's local disk).
      Empty (default) uses numba's default location.
  log_level:
    type: string?
    doc: Logging verbosity (DEBUG, INFO, WARNING, ERROR).
    inputBinding:
      prefix: --log-level
arguments:
  - prefix: --provenance-log
    valueFrom: $(inputs.output_filename).provenance.json
outputs:
  cuts:
    type: File
    format: https://www.iana.org/assignments/media-types/application/fits
    doc: Cuts file (FITS - QUALITY_CUTS_EXPR, GH_CUTS, VALID_ENERGY, VALID_OFFSET, RAD_MAX, PROVENANCE).
    outputBinding:
      glob: $(inputs.output_filename)
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.output_filename).provenance.json
