cwlVersion: v1.2
class: CommandLineTool
label: Apply energy, gammaness and disp models to a DL2 file
doc: |
  Apply iactpipe model files (iactpipe-train-energy, -train-gammaness, -train-disp) to a DL2 file (DPPS-UC-130-1.8):
  per-telescope predictions with the flat-tree inference kernel, then their per-event combination, written in
  ctapipe-apply-models' layout (/dl2/event/telescope/... and /dl2/event/subarray/{energy,particle_type,geometry}/<prefix>)
  into a copy of the input, named after it, with the provenance record. With an event-type model (UC-130-2.1.4)
  also the event type of each event (/dl2/event/subarray/event_type/<prefix>).
baseCommand: iactpipe-apply-models
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
    doc: DL2 file (iactpipe-dl1-to-dl2 or ctapipe output with DL1 parameters and the geometry used by the models).
    inputBinding:
      position: 1
  energy_model:
    type: File?
    doc: Energy model file (iactpipe-train-energy).
    inputBinding:
      prefix: --energy-model
  gammaness_model:
    type: File?
    doc: Gammaness model file (iactpipe-train-gammaness).
    inputBinding:
      prefix: --gammaness-model
  disp_model:
    type: File?
    doc: Disp model file (iactpipe-train-disp).
    inputBinding:
      prefix: --disp-model
  event_type_model:
    type: File?
    doc: Event-type model file (iactpipe-train-event-types); writes /dl2/event/subarray/event_type/<prefix>.
    inputBinding:
      prefix: --event-type-model
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/apply_models.yaml), applied in order.
  chunk_size:
    type: int?
    doc: Subarray events predicted and written at once (default 50000).
    inputBinding:
      prefix: --chunk-size
  n_threads:
    type: int?
    doc: Threads of the forest inference (default 1).
    inputBinding:
      prefix: --n-threads
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
    valueFrom: $(inputs.input.nameroot).applied.h5
  - prefix: --provenance-log
    valueFrom: $(inputs.input.nameroot).applied.provenance.json
outputs:
  dl2:
    type: File
    format: http://edamontology.org/format_3590
    doc: DL2 file (HDF5, ctapipe data model) - the input plus the model predictions.
    outputBinding:
      glob: $(inputs.input.nameroot).applied.h5
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.input.nameroot).applied.provenance.json
