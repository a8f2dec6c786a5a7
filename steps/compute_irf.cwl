cwlVersion: v1.2
class: CommandLineTool
label: Compute IRF (GADF) and performance
doc: |
  Compute instrument response functions from simulated DL2 events after the cuts of a cuts file
  (DPPS-UC-130-1.6) - effective area, energy dispersion, PSF table, background rate (2D, or FoV-aligned 3D
  where statistics allow) and RAD_MAX for point-like IRFs - as a GADF FITS file with the CTAO prod5 HDU
  names, and optionally a performance file (energy bias and resolution, angular resolution, differential
  sensitivity). Full-enclosure by default, point-like with point_like.
baseCommand: iactpipe-compute-irf
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
  cuts:
    type: File
    doc: Cuts file of iactpipe-optimize-cuts (or ctapipe-optimize-event-selection).
    inputBinding:
      prefix: --cuts
  gamma_file:
    type: File
    doc: DL2 file of simulated gammas (diffuse for a full-enclosure IRF over the FoV).
    inputBinding:
      prefix: --gamma-file
  proton_file:
    type: File?
    doc: DL2 file of simulated protons (background and sensitivity; required unless no_background).
    inputBinding:
      prefix: --proton-file
  electron_file:
    type: File?
    doc: DL2 file of simulated electrons (background and sensitivity).
    inputBinding:
      prefix: --electron-file
  output_filename:
    type: string
    default: irf.fits
    doc: Name of the IRF file (GADF FITS).
    inputBinding:
      prefix: --output
  performance_filename:
    type: string?
    doc: Also write a performance file of this name (FITS - energy bias/resolution, angular resolution, sensitivity).
    inputBinding:
      prefix: --performance-output
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/compute_irf.yaml), applied in order.
  point_like:
    type: boolean?
    doc: Point-like IRF (direction cut of the cuts file applied, RAD_MAX HDU); default full-enclosure.
    inputBinding:
      prefix: --point-like
  no_background:
    type: boolean?
    doc: Do not compute the background rate and sensitivity (gammas only).
    inputBinding:
      prefix: --no-background
  background_kind:
    type: string?
    doc: auto (default - 3D where statistics allow), 2d or 3d.
    inputBinding:
      prefix: --background-kind
  fov_offset_n_bins:
    type: int?
    doc: FoV offset bins (default 1; must be 1 for point-like gamma simulations).
    inputBinding:
      prefix: --fov-offset-n-bins
  obs_time:
    type: [float, string, "null"]
    doc: Observation time of the event weights in hours, or with a unit (default 50 h).
    inputBinding:
      prefix: --obs-time
  geometry_reconstructor:
    type: string?
    doc: Direction table name (default - the one recorded in the cuts file).
    inputBinding:
      prefix: --geometry-reconstructor
  energy_reconstructor:
    type: string?
    doc: Energy table name (default - the one recorded in the cuts file).
    inputBinding:
      prefix: --energy-reconstructor
  chunk_size:
    type: int?
    doc: Subarray events read at once (default 100000).
    inputBinding:
      prefix: --chunk-size
  range_check_error:
    type: boolean?
    doc: Fail when IRF energy bins reach outside the range the cuts are valid in (default - warn).
    inputBinding:
      prefix: --range-check-error
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
  irf:
    type: File
    format: https://www.iana.org/assignments/media-types/application/fits
    doc: IRF file (GADF - EFFECTIVE AREA, ENERGY DISPERSION, POINT SPREAD FUNCTION or RAD_MAX, BACKGROUND).
    outputBinding:
      glob: $(inputs.output_filename)
  performance:
    type: File?
    format: https://www.iana.org/assignments/media-types/application/fits
    doc: Performance file (ENERGY BIAS RESOLUTION, ANGULAR RESOLUTION, SENSITIVITY).
    outputBinding:
      glob: $(inputs.performance_filename)
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.output_filename).provenance.json
