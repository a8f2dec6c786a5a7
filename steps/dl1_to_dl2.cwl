cwlVersion: v1.2
class: CommandLineTool
label: Process DL1 to DL2 (stereo shower geometry from Hillas parameters)
doc: |
  Reconstruct the shower direction, core position and height of the maximum of each event from the Hillas
  parameters of its telescopes (ctapipe's HillasReconstructor; DPPS-UC-130-1.3) after a configurable stereo
  quality query. Reads a DL1 file of iactpipe or ctapipe and writes a DL2 HDF5 file in ctapipe's layout that
  keeps all DL1 content (images only on request), so it can be used for model training directly; adds the
  geometry, per-telescope impact and cut-flow tables, named after the input, and the provenance record.
baseCommand: iactpipe-dl1-to-dl2
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
  input:
    type: File
    doc: DL1 HDF5 file (iactpipe-dl0-to-dl1 or ctapipe-process output with DL1 parameters).
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
    doc: YAML configuration files (schemas/config/dl1_to_dl2.yaml, e.g. the stereo quality query), applied in order.
  chunk_size:
    type: int?
    doc: Subarray events processed at once (default from the config, 20000).
    inputBinding:
      prefix: --chunk-size
  keep_images:
    type: boolean?
    doc: Also copy the DL1 images (and true images) of the input.
    inputBinding:
      prefix: --keep-images
  min_telescopes:
    type: int?
    doc: Minimum number of telescopes passing the quality query for a reconstruction (default 2).
    inputBinding:
      prefix: --min-telescopes
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
    valueFrom: $(inputs.input.nameroot).dl2.h5
  - prefix: --provenance-log
    valueFrom: $(inputs.input.nameroot).dl2.provenance.json
outputs:
  dl2:
    type: File
    format: http://edamontology.org/format_3590
    doc: DL2 file (HDF5, ctapipe data model) with the DL1 content of the input and the reconstructed geometry.
    outputBinding:
      glob: $(inputs.input.nameroot).dl2.h5
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.input.nameroot).dl2.provenance.json
