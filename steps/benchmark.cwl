cwlVersion: v1.2
class: CommandLineTool
label: Benchmark report (and release comparison)
doc: |
  Benchmarks of a simulation processing result (DPPS-UC-130-1.5, 1.7) - DL1 charge resolution against the
  CTAO requirement, cleaning efficiency and image-parameter resolution per telescope type; energy bias and
  resolution, migration matrix, angular and core resolution, ROC curves and AUC per energy bin; feature
  importances and cross-validation spread of models; IRFs (effective area, energy dispersion, PSF,
  background, sensitivity) against a reference IRF such as CTAO prod5 (shape and scale only); counts,
  excess and Li & Ma significance at the source position in DL3 event lists. Writes a directory with
  metrics.h5 (metric curves with units), metrics.json (summary scalars with pass/warn/fail status), PNG
  plots and a self-contained report.html. With reference_metrics and candidate_metrics instead, compares
  two metrics.json files with per-metric tolerances and fails (exit 1) on a regression.
baseCommand: iactpipe-benchmark
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 4096
  - class: EnvVarRequirement
    envDef:
      NUMBA_CACHE_DIR: $(inputs.numba_cache_dir)
      NUMBA_NUM_THREADS: "1"
      OMP_NUM_THREADS: "1"
      MPLBACKEND: Agg
inputs:
  # report inputs (any of them; each adds its section)
  dl1:
    type: File[]?
    doc: Simulated DL1 files written with --write-images (charge resolution, cleaning, image parameters).
    inputBinding:
      prefix: --dl1
  dl2:
    type: File[]?
    doc: Simulated DL2 files, gammas and protons (energy, direction, core, ROC and AUC).
    inputBinding:
      prefix: --dl2
  models:
    type: File[]?
    doc: Model files of iactpipe-train-energy/-gammaness/-disp (feature importances, cross-validation spread).
    inputBinding:
      prefix: --models
  cv:
    type: File[]?
    doc: Cross-validation tables of the training steps (metric per fold and its spread).
    inputBinding:
      prefix: --cv
  irf:
    type: File?
    doc: IRF file of iactpipe-compute-irf (GADF).
    inputBinding:
      prefix: --irf
  performance:
    type: File?
    doc: Performance file of iactpipe-compute-irf (differential sensitivity, resolutions).
    inputBinding:
      prefix: --performance
  reference_irf:
    type: File?
    doc: Reference IRF to compare with, e.g. a CTAO prod5 file (our toy simulation is not CTAO's - shape and scale only).
    inputBinding:
      prefix: --reference-irf
  dl3:
    type: File[]?
    doc: DL3 event lists of a simulated observation (the command line also takes directories).
    inputBinding:
      prefix: --dl3
  output_dir:
    type: string
    default: benchmark
    doc: Name of the output directory (metrics.h5, metrics.json, PNG plots, report.html).
    inputBinding:
      prefix: --output-dir
  # compare mode
  reference_metrics:
    type: File?
    doc: Compare mode - metrics.json of the reference release (give candidate_metrics too, no report inputs).
    inputBinding:
      prefix: --reference-metrics
  candidate_metrics:
    type: File?
    doc: Compare mode - metrics.json of the candidate release.
    inputBinding:
      prefix: --candidate-metrics
  tolerances:
    type: File?
    doc: Compare mode - YAML file of per-metric tolerances (the compare section of schemas/config/benchmark.yaml).
    inputBinding:
      prefix: --tolerances
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/benchmark.yaml), applied in order.
  title:
    type: string?
    doc: Title of the HTML report.
    inputBinding:
      prefix: --title
  dl1_max_events:
    type: int?
    doc: Array events read per DL1 file (default 2000).
    inputBinding:
      prefix: --dl1-max-events
  geometry_reconstructor:
    type: string?
    doc: Direction table name (default - the first in the DL2 file).
    inputBinding:
      prefix: --geometry-reconstructor
  energy_reconstructor:
    type: string?
    doc: Energy table name (default - the first in the DL2 file).
    inputBinding:
      prefix: --energy-reconstructor
  gammaness_classifier:
    type: string?
    doc: Gammaness table name (default - the first in the DL2 file).
    inputBinding:
      prefix: --gammaness-classifier
  reference_energy:
    type: [float, string, "null"]
    doc: Energy of the summary scalars in TeV, or with a unit (default 1 TeV).
    inputBinding:
      prefix: --reference-energy
  source_ra:
    type: [float, string, "null"]
    doc: Source right ascension in deg (default - RA_OBJ of the event lists).
    inputBinding:
      prefix: --source-ra
  source_dec:
    type: [float, string, "null"]
    doc: Source declination in deg (default - DEC_OBJ of the event lists).
    inputBinding:
      prefix: --source-dec
  on_radius:
    type: [float, string, "null"]
    doc: ON (and OFF) region radius in deg (default 0.2).
    inputBinding:
      prefix: --on-radius
  n_off_regions:
    type: int?
    doc: Reflected OFF regions (default 3).
    inputBinding:
      prefix: --n-off-regions
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
    valueFrom: $(inputs.output_dir).provenance.json
outputs:
  report_dir:
    type: Directory?
    doc: The report directory (absent in compare mode).
    outputBinding:
      glob: $(inputs.output_dir)
  report:
    type: File?
    format: https://www.iana.org/assignments/media-types/text/html
    doc: Self-contained HTML report (plots embedded, metric table with pass/warn/fail).
    outputBinding:
      glob: $(inputs.output_dir)/report.html
  metrics:
    type: File?
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Summary metrics with status (input of compare mode).
    outputBinding:
      glob: $(inputs.output_dir)/metrics.json
  metric_curves:
    type: File?
    format: http://edamontology.org/format_3590
    doc: Metric curves with units (HDF5 tables under /benchmark).
    outputBinding:
      glob: $(inputs.output_dir)/metrics.h5
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.output_dir).provenance.json
