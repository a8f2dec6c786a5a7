cwlVersion: v1.2
class: CommandLineTool
label: Split a simulation file by event (train/test)
doc: |
  Split the events of a DL1/DL2 HDF5 file (ctapipe data model) into a training and a test file: each
  (obs_id, event_id) goes to one output, chosen by a seeded hash of the ids, with all its tables (triggers,
  simulation truth, images, parameters, DL2). Run-level tables are copied, the thrown-shower counts shared
  out by the fraction. Outputs are named after the input, <input>.train.h5 and <input>.test.h5.
baseCommand: iactpipe-split
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
  # data
  input:
    type: File
    doc: HDF5 file (iactpipe or ctapipe DL1/DL2) to split.
    inputBinding:
      position: 1
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/split.yaml), applied in order.
  fraction:
    type: float?
    doc: Expected fraction of the events in the training file (default 0.5; the test file gets the rest).
    inputBinding:
      prefix: --fraction
  fractions:
    type: float[]?
    doc: Fractions of the training and test files (two values summing to 1; overrides fraction).
    inputBinding:
      prefix: --fractions
      position: 2
  seed:
    type: int?
    doc: Seed of the event hash (default 0); the same seed gives the same split.
    inputBinding:
      prefix: --seed
  chunk_size:
    type: int?
    doc: Rows read at once (default from the config, 100000; also capped at 64 MiB).
    inputBinding:
      prefix: --chunk-size
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
    valueFrom: $(inputs.input.nameroot).train.h5
  - prefix: --output
    valueFrom: $(inputs.input.nameroot).test.h5
  - prefix: --provenance-log
    valueFrom: $(inputs.input.nameroot).split.provenance.json
outputs:
  train:
    type: File
    format: http://edamontology.org/format_3590
    doc: The first part (fraction of the events), <input>.train.h5.
    outputBinding:
      glob: $(inputs.input.nameroot).train.h5
  test:
    type: File
    format: http://edamontology.org/format_3590
    doc: The second part (the rest of the events), <input>.test.h5.
    outputBinding:
      glob: $(inputs.input.nameroot).test.h5
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.input.nameroot).split.provenance.json
