cwlVersion: v1.2
class: CommandLineTool
label: Index a directory of DL3 runs (GADF hdu-index and obs-index)
doc: |
  Write the GADF HDU index and observation index of a directory of DL3 files (one run per file), like
  the H.E.S.S. DR1 index files, so that gammapy's DataStore.from_dir opens the runs (DPPS-UC-130-1.6).
  The directory is staged writable; the output is the directory with its two index files, and the
  provenance record of the run.
baseCommand: iactpipe-dl3-index
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 1024
  - class: EnvVarRequirement
    envDef:
      NUMBA_CACHE_DIR: $(inputs.numba_cache_dir)
      NUMBA_NUM_THREADS: "1"
      OMP_NUM_THREADS: "1"
  - class: InitialWorkDirRequirement
    listing:
      - entry: $(inputs.directory)
        writable: true
inputs:
  directory:
    type: Directory
    doc: Directory of DL3 FITS files (FITS files without an EVENTS HDU, e.g. IRF files, are skipped).
    inputBinding:
      position: 1
      valueFrom: $(self.basename)
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/dl3_index.yaml), applied in order.
  pattern:
    type: string?
    doc: Glob pattern of the DL3 files relative to the directory (default '**/*.fits*').
    inputBinding:
      prefix: --pattern
  hdu_index:
    type: string?
    doc: File name of the HDU index (default hdu-index.fits.gz).
    inputBinding:
      prefix: --hdu-index
  obs_index:
    type: string?
    doc: File name of the observation index (default obs-index.fits.gz).
    inputBinding:
      prefix: --obs-index
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
    valueFrom: $(inputs.directory.basename).index.provenance.json
outputs:
  dl3_directory:
    type: Directory
    doc: The DL3 directory with hdu-index and obs-index (gammapy DataStore.from_dir).
    outputBinding:
      glob: $(inputs.directory.basename)
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.directory.basename).index.provenance.json
