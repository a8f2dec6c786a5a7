cwlVersion: v1.2
class: CommandLineTool
label: Print the lineage of a data product
doc: |
  Print the provenance lineage of an iactpipe output (HDF5 or FITS) back to its raw
  inputs: each step's name, version, activity UUID, command line and (optionally)
  configuration, and every input's product UUID and checksum. Writes it to a text file.
baseCommand: iactpipe-provenance
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 512
  - class: EnvVarRequirement
    envDef:
      NUMBA_CACHE_DIR: $(inputs.numba_cache_dir)
      NUMBA_NUM_THREADS: "1"
      OMP_NUM_THREADS: "1"
inputs:
  input:
    type: File
    doc: iactpipe output file (HDF5 or FITS) whose lineage is printed.
    inputBinding:
      position: 1
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/provenance.yaml), applied in order.
  show_config:
    type: boolean?
    doc: Also print each step's full resolved configuration; default from the config (false).
    inputBinding:
      prefix: --show-config
  as_json:
    type: boolean?
    doc: Print the lineage tree as JSON instead of text.
    inputBinding:
      prefix: --json
  verify:
    type: boolean?
    doc: Re-compute the checksums of the recorded inputs still on disk; fail if one has changed.
    inputBinding:
      prefix: --verify
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
    valueFrom: $(inputs.input.nameroot).lineage.provenance.json
stdout: $(inputs.input.nameroot).lineage.txt
outputs:
  lineage:
    type: stdout
    doc: The lineage as text (or JSON with as_json).
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.input.nameroot).lineage.provenance.json
