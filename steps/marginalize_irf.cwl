cwlVersion: v1.2
class: CommandLineTool
label: IRF of one observation from a zenith grid of IRFs (pyirf interpolation)
doc: |
  Interpolate a grid of GADF IRF files made at different zenith angles (same binning, >= 3 zeniths
  recommended) at the mean zenith angle of one observation (DL3 or DL2 file) or at a given zenith, with
  pyirf's estimators per IRF component (DPPS-UC-130-3.2.2). Writes one GADF IRF FITS file and the
  provenance record of the run.
baseCommand: iactpipe-marginalize-irf
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 2048
  - class: EnvVarRequirement
    envDef:
      NUMBA_CACHE_DIR: $(inputs.numba_cache_dir)
      NUMBA_NUM_THREADS: "1"
      OMP_NUM_THREADS: "1"
inputs:
  # data
  irfs:
    type: File[]
    doc: IRF files of the zenith grid (GADF FITS with identical binning and a ZENITH keyword each).
    inputBinding:
      position: -1
  observation:
    type: File?
    doc: DL3 (FITS) or DL2 (HDF5) file of the run, whose mean zenith angle is the target.
    inputBinding:
      prefix: --observation
  output:
    type: string
    default: irf_marginalized.fits
    doc: Name of the output IRF file (.fits or .fits.gz).
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
    doc: YAML configuration files (schemas/config/marginalize_irf.yaml), applied in order.
  zenith:
    type: ["null", float, string]
    doc: Zenith angle in deg to interpolate at (default - the mean zenith of the observation).
    inputBinding:
      prefix: --zenith
  grid_zeniths:
    type: float[]?
    doc: Zenith angles (deg) of the grid files in their order (default - their ZENITH keywords).
    inputBinding:
      prefix: --grid-zeniths
  grid_variable:
    type: string?
    doc: Interpolation coordinate, cos_zenith (default) or zenith.
    inputBinding:
      prefix: --grid-variable
  pdf_method:
    type: string?
    doc: Interpolation of migration and PSF distributions, quantile (default) or moment_morph.
    inputBinding:
      prefix: --pdf-method
  extrapolate:
    type: boolean?
    doc: Outside the grid take the nearest grid point's IRF instead of failing.
    inputBinding:
      prefix: --extrapolate
  min_effective_area:
    type: ["null", float, string]
    doc: Effective areas below this (m2) count as zero (default 1 m2).
    inputBinding:
      prefix: --min-effective-area
  pointing_interval:
    type: ["null", float, string]
    doc: Time step (s) at which the pointing of a DL2 observation is sampled (default 60 s).
    inputBinding:
      prefix: --pointing-interval
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
  - prefix: --provenance-log
    valueFrom: $(inputs.output).provenance.json
outputs:
  irf:
    type: File
    format: https://www.iana.org/assignments/media-types/application/fits
    doc: The IRF of the observation (GADF FITS).
    outputBinding:
      glob: $(inputs.output)
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.output).provenance.json
