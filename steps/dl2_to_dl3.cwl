cwlVersion: v1.2
class: CommandLineTool
label: Process DL2 to DL3 (gammaness cuts, GADF event list with IRFs)
doc: |
  Select the gamma-like events of one observed run (DL2, ctapipe HDF5 layout) with the energy-dependent
  gammaness cuts of a cuts file and write a GADF DL3 FITS file (DPPS-UC-130-1.6): EVENTS (RA/Dec from the
  reconstructed alt/az at each event's time, energy, gammaness, multiplicity, event type), GTI, POINTING
  and the IRF HDUs of the run, with the standard header keywords. Named after the input, with the
  provenance record of the run.
baseCommand: iactpipe-dl2-to-dl3
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
    doc: DL2 HDF5 file of one observed run (trigger times, geometry, energy and gammaness tables, pointing).
    inputBinding:
      position: 1
  cuts:
    type: File
    doc: Cuts file (FITS with GH_CUTS, from iactpipe-optimize-cuts).
    inputBinding:
      prefix: --cuts
  irf:
    type: File
    doc: IRF file of the run (GADF FITS, from iactpipe-compute-irf or iactpipe-marginalize-irf).
    inputBinding:
      prefix: --irf
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/dl2_to_dl3.yaml), applied in order.
  geometry_reconstructor:
    type: string?
    doc: Algorithm of the direction table /dl2/event/subarray/geometry/<name> (default HillasReconstructor).
    inputBinding:
      prefix: --geometry-reconstructor
  energy_reconstructor:
    type: string?
    doc: Algorithm of the energy table /dl2/event/subarray/energy/<name> (default RandomForestRegressor).
    inputBinding:
      prefix: --energy-reconstructor
  gh_classifier:
    type: string?
    doc: Algorithm of the gammaness table /dl2/event/subarray/particle_type/<name> (default RandomForestClassifier).
    inputBinding:
      prefix: --gh-classifier
  min_multiplicity:
    type: int?
    doc: Keep events reconstructed with at least this many telescopes (default 2).
    inputBinding:
      prefix: --min-multiplicity
  trigger_event_type:
    type: boolean?
    doc: EVENT_TYPE = ctapipe's trigger event type even if the file has an event-type table of iactpipe-apply-models (default - that table's types).
    inputBinding:
      prefix: --no-use-event-types
  event_type_name:
    type: string?
    doc: Event-type table /dl2/event/subarray/event_type/<name> (default - the only one of the file).
    inputBinding:
      prefix: --event-type-name
  event_types:
    type: int[]?
    doc: Keep only events of these event types (the IRF must be made for the same types).
    inputBinding:
      prefix: --event-types
  deadc:
    type: float?
    doc: Dead-time correction DEADC = LIVETIME / ONTIME of the run (default 1).
    inputBinding:
      prefix: --deadc
  pointing_interval:
    type: ["null", float, string]
    doc: Time step of the POINTING table in s, or a quantity such as '30 s' (default 60 s).
    inputBinding:
      prefix: --pointing-interval
  object_name:
    type: string?
    doc: Name of the observed source (OBJECT keyword).
    inputBinding:
      prefix: --object-name
  object_ra:
    type: ["null", float, string]
    doc: Right ascension (ICRS) of the source in deg (default - the pointing target).
    inputBinding:
      prefix: --object-ra
  object_dec:
    type: ["null", float, string]
    doc: Declination (ICRS) of the source in deg (default - the pointing target).
    inputBinding:
      prefix: --object-dec
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
    valueFrom: $(inputs.input.nameroot).dl3.fits
  - prefix: --provenance-log
    valueFrom: $(inputs.input.nameroot).dl3.provenance.json
outputs:
  dl3:
    type: File
    format: https://www.iana.org/assignments/media-types/application/fits
    doc: DL3 file (GADF FITS) of the run, named after the input.
    outputBinding:
      glob: $(inputs.input.nameroot).dl3.fits
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.input.nameroot).dl3.provenance.json
