cwlVersion: v1.2
class: CommandLineTool
label: Process DL0 to DL1 (calibration, image cleaning, image parameters)
doc: |
  Calibrate sim_telarray or iactpipe DL0 files, extract charges and peak times, treat unusable pixels,
  clean the images and compute their parameters (DPPS-UC-130-1.2.1). Writes one DL1 HDF5 file in
  ctapipe's layout (parameters always, images on request, simulation truth copied through), named
  after the first input, and the provenance record of the run.
baseCommand: iactpipe-dl0-to-dl1
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
    doc: sim_telarray files (.simtel, .simtel.gz, .simtel.zst) or iactpipe DL0 HDF5 files of one subarray.
    inputBinding:
      position: -1
  calibration_file:
    type: File?
    doc: HDF5 file of camera calibration coefficients (pedestals, gains, time offsets, unusable pixels) replacing those of the input.
    inputBinding:
      prefix: --calibration-file
  reduced_dl0_filename:
    type: string?
    doc: >
      Name of a reduced DL0 file to write as well (e.g. run.reduced.dl0.h5; one input only): R1 waveforms
      of the pixels of a loose cleaning plus neighbour rings, charges and peak times of all pixels.
    inputBinding:
      prefix: --reduced-dl0
  # configuration
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/dl0_to_dl1.yaml), applied in order.
  max_events:
    type: int?
    doc: Stop after this many array events in total (default - all).
    inputBinding:
      prefix: --max-events
  allowed_tels:
    type: int[]?
    doc: Process only these tel_ids (default - all telescopes).
    inputBinding:
      prefix: --allowed-tels
  chunk_size:
    type: int?
    doc: Array events processed at once (default from the config, 50).
    inputBinding:
      prefix: --chunk-size
  allow_truncated:
    type: boolean?
    doc: Process the complete events of a truncated sim_telarray file instead of failing.
    inputBinding:
      prefix: --allow-truncated
  no_read_ahead:
    type: boolean?
    doc: >
      Decompress a compressed sim_telarray input, or decode and process a DL0 HDF5 input's next chunk, in the
      processing thread (default - in a second thread where the job may use more than one CPU).
    inputBinding:
      prefix: --no-read-ahead
  focal_length_choice:
    type: string?
    doc: Focal length for the telescope frame, effective (default) or equivalent.
    inputBinding:
      prefix: --focal-length-choice
  write_images:
    type: boolean?
    doc: Also write images, peak times and cleaning masks (and true images of simulations).
    inputBinding:
      prefix: --write-images
  gain_threshold:
    type: float?
    doc: Low gain for pixels with a high-gain sample above this many ADC counts (default 4000).
    inputBinding:
      prefix: --gain-threshold
  no_peak_time_shift:
    type: boolean?
    doc: Do not subtract the per-pixel time offsets of the calibration from the peak times.
    inputBinding:
      prefix: --no-peak-time-shift
  extractor:
    type: string?
    doc: >
      Charge extractor for all telescope types without their own entry in a config file (NeighborPeakWindowSum,
      LocalPeakWindowSum, GlobalPeakWindowSum, FixedWindowSum, FullWaveformSum, SlidingWindowMaxSum,
      FlashCamExtractor, BaselineSubtractedNeighborPeakWindowSum, TwoPassWindowSum, VarianceExtractor).
    inputBinding:
      prefix: --extractor
  window_width:
    type: int?
    doc: Integration window in samples (default - the extractor's own).
    inputBinding:
      prefix: --window-width
  window_shift:
    type: int?
    doc: Samples the window starts before the peak (default - the extractor's own).
    inputBinding:
      prefix: --window-shift
  no_integration_correction:
    type: boolean?
    doc: Do not correct window sums for the part of the reference pulse outside the window.
    inputBinding:
      prefix: --no-integration-correction
  invalid_pixels:
    type: string?
    doc: Treatment of unusable pixels - interpolate (default), exclude or keep.
    inputBinding:
      prefix: --invalid-pixels
  cleaning:
    type: string?
    doc: Cleaning algorithm for all telescope types without their own entry - tailcuts (default), time_constrained or mars.
    inputBinding:
      prefix: --cleaning
  picture_threshold:
    type: float?
    doc: Picture threshold in p.e. for all telescope types without their own entry (default 10).
    inputBinding:
      prefix: --picture-threshold
  boundary_threshold:
    type: float?
    doc: Boundary threshold in p.e. for all telescope types without their own entry (default 5).
    inputBinding:
      prefix: --boundary-threshold
  min_picture_neighbors:
    type: int?
    doc: Neighbours above the picture threshold a core pixel needs (default 2).
    inputBinding:
      prefix: --min-picture-neighbors
  keep_isolated_pixels:
    type: boolean?
    doc: Keep core pixels without a neighbour above the boundary threshold.
    inputBinding:
      prefix: --keep-isolated-pixels
  min_intensity:
    type: float?
    doc: Image quality - the cleaned image needs more than this intensity in p.e. (default 0).
    inputBinding:
      prefix: --min-intensity
  min_pixels:
    type: int?
    doc: Image quality - the cleaned image needs at least this many pixels (default 2).
    inputBinding:
      prefix: --min-pixels
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
    valueFrom: $(inputs.inputs[0].nameroot).dl1.h5
  - prefix: --provenance-log
    valueFrom: $(inputs.inputs[0].nameroot).dl1.provenance.json
outputs:
  dl1:
    type: File
    format: http://edamontology.org/format_3590
    doc: DL1 file (HDF5, ctapipe data model) named after the first input.
    outputBinding:
      glob: $(inputs.inputs[0].nameroot).dl1.h5
  reduced_dl0:
    type: File?
    format: http://edamontology.org/format_3590
    doc: The reduced DL0 file (HDF5), when reduced_dl0_filename is given.
    outputBinding:
      glob: $(inputs.reduced_dl0_filename)
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.inputs[0].nameroot).dl1.provenance.json
