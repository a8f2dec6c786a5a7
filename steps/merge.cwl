cwlVersion: v1.2
class: CommandLineTool
label: Merge DL1/DL2 files of one subarray
doc: |
  Merge DL1 or DL2 HDF5 files (ctapipe data model, written by iactpipe or ctapipe) of one subarray into one file
  (DPPS-UC-130-1.8): event tables appended in input order, simulation run settings and shower distributions of
  the same obs_id summed (e.g. the parts of a split run), observation blocks de-duplicated, cut-flow statistics
  summed; streamed in chunks. Writes the merged file and the provenance record of the run.
baseCommand: iactpipe-merge
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
  inputs:
    type: File[]
    doc: HDF5 files to merge (same instrument), in the order their events are written.
    inputBinding:
      position: -1
  output_name:
    type: string
    default: merged.h5
    doc: File name of the merged output.
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
    doc: YAML configuration files (schemas/config/merge.yaml), applied in order.
  skip_images:
    type: boolean?
    doc: Leave out the DL1 images (/dl1/event/telescope/images).
    inputBinding:
      prefix: --skip-images
  skip_simu_images:
    type: boolean?
    doc: Leave out the true images (true_image column; true_image_sum is kept).
    inputBinding:
      prefix: --skip-simu-images
  allow_duplicate_events:
    type: boolean?
    doc: Keep events whose (obs_id, event_id) is already in an earlier input instead of failing.
    inputBinding:
      prefix: --allow-duplicate-events
  chunk_size:
    type: int?
    doc: Rows copied at once (default from the config, 100000; also capped at 64 MiB).
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
  - prefix: --provenance-log
    valueFrom: $(inputs.output_name).provenance.json
outputs:
  merged:
    type: File
    format: http://edamontology.org/format_3590
    doc: The merged HDF5 file (ctapipe data model).
    outputBinding:
      glob: $(inputs.output_name)
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.output_name).provenance.json
