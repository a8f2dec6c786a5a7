cwlVersion: v1.2
class: CommandLineTool
label: Inspect an HDF5 data file
doc: |
  Summarise an iactpipe or ctapipe HDF5 file: tables and row counts, simulated
  showers, instrument and provenance lineage. Writes the summary to a text file.
baseCommand: iactpipe-inspect
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 1024
  - class: EnvVarRequirement
    envDef:
      NUMBA_CACHE_DIR: $(inputs.numba_cache_dir)
      NUMBA_NUM_THREADS: "1"
      OMP_NUM_THREADS: "1"
inputs:
  input:
    type: File
    doc: HDF5 file (iactpipe or ctapipe data model) to summarise.
    inputBinding:
      position: 1
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/inspect.yaml), applied in order.
  max_rows:
    type: int?
    doc: Number of rows of each event table to print (0 = none); default from the config (5).
    inputBinding:
      prefix: --max-rows
  as_json:
    type: boolean?
    doc: Print the provenance lineage as JSON instead of the summary.
    inputBinding:
      prefix: --json
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
    valueFrom: $(inputs.input.nameroot).inspect.provenance.json
stdout: $(inputs.input.nameroot).inspect.txt
outputs:
  summary:
    type: stdout
    doc: The text summary (or JSON lineage with as_json).
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.input.nameroot).inspect.provenance.json
