cwlVersion: v1.2
class: CommandLineTool
label: Train event types (quality classes of fixed fractions per energy bin)
doc: |
  Split simulated gammas into event types (DPPS-UC-130-2.1.4): per reconstructed-energy bin, the quantile boundaries
  of a per-event angular-error estimator (an expression over the DL2 subarray columns, low = better) so that each
  type holds a fixed fraction of the gammas (default quartiles; type 1 = best, like CTAO's PSF-quartile event
  types). Writes an event-type model file (HDF5 arrays + JSON metadata, no pickle) with the 68 % angular resolution
  per type, and the provenance record, named after the first input. Applied by iactpipe-apply-models
  --event-type-model.
baseCommand: iactpipe-train-event-types
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
  inputs:
    type: File[]
    doc: DL2 files of simulated gammas with reconstructed direction and energy (iactpipe-apply-models output).
    inputBinding:
      position: -1
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/train_event_types.yaml - estimator, fractions, energy bins, quality criteria), applied in order.
  geometry_reconstructor:
    type: string?
    doc: Algorithm of the direction table /dl2/event/subarray/geometry/<name> (default HillasReconstructor).
    inputBinding:
      prefix: --geometry-reconstructor
  energy_reconstructor:
    type: string?
    doc: Algorithm of the energy table /dl2/event/subarray/energy/<name> (default - the only energy table of the file).
    inputBinding:
      prefix: --energy-reconstructor
  estimator:
    type: string?
    doc: Quality estimator, low = better (a DL2 subarray column or expression; default 1 / sqrt(<geometry>_average_intensity)).
    inputBinding:
      prefix: --estimator
  fractions:
    type: float[]?
    doc: Fraction of the gammas in each type, from type 1 (best) on (default 0.25 0.25 0.25 0.25).
    inputBinding:
      prefix: --fractions
  energy_min:
    type: [float, string, "null"]
    doc: Lower edge of the energy binning (TeV; default 0.01).
    inputBinding:
      prefix: --energy-min
  energy_max:
    type: [float, string, "null"]
    doc: Upper edge of the energy binning (TeV; default 300).
    inputBinding:
      prefix: --energy-max
  bins_per_decade:
    type: int?
    doc: Energy bins per decade (default 4).
    inputBinding:
      prefix: --bins-per-decade
  min_events_per_bin:
    type: int?
    doc: Bins with fewer training events take the boundaries of the nearest bin with enough (default 40).
    inputBinding:
      prefix: --min-events-per-bin
  prefix:
    type: string?
    doc: Name of the event-type table / column written by iactpipe-apply-models (default PSFEventType).
    inputBinding:
      prefix: --prefix
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
    valueFrom: $(inputs.inputs[0].nameroot).event_types.h5
  - prefix: --provenance-log
    valueFrom: $(inputs.inputs[0].nameroot).event_types.provenance.json
outputs:
  model:
    type: File
    format: http://edamontology.org/format_3590
    doc: Event-type model file (HDF5 - energy bins, estimator boundaries per bin and JSON metadata; no pickle).
    outputBinding:
      glob: $(inputs.inputs[0].nameroot).event_types.h5
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.inputs[0].nameroot).event_types.provenance.json
