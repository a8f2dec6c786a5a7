cwlVersion: v1.2
class: CommandLineTool
label: Data-quality metrics of an observation run
doc: |
  Data-quality metrics of one observation run per data level (DPPS-UC-130-2.2.x, 3.2.x), each judged OK,
  WARNING or BAD against the reference ranges of the configuration (schemas/config/quality.yaml) -
  DL0 trigger rates per telescope and of the array vs time, telescope drop-outs, gaps and missing events,
  pedestal mean and noise per pixel, dead / hot / saturated pixels, noise (night-sky background) vs time;
  DL1 images surviving cleaning and cuts, intensity and width distributions vs time and vs a reference run,
  image rates vs time, night-sky background per pixel; DL2 reconstructed rate, multiplicity, directions in
  the field of view, gammaness, h_max vs zenith; DL3 event-rate stability, background rate, GTI coverage.
  Writes a directory with metrics.h5 (tables), metrics.json (value, ranges and status per metric), PNG
  plots and a self-contained report.html, and prints one summary line for the run. A BAD run is a finding,
  not an error - the exit code is 0.
baseCommand: iactpipe-quality
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 4096
  - class: EnvVarRequirement
    envDef:
      NUMBA_CACHE_DIR: $(inputs.numba_cache_dir)
      NUMBA_NUM_THREADS: "1"
      OMP_NUM_THREADS: "1"
      MPLBACKEND: Agg
inputs:
  dl0:
    type: File?
    doc: DL0 file of the run (R1 waveforms or images-only).
    inputBinding:
      prefix: --dl0
  dl1:
    type: File?
    doc: DL1 file of the run (written with --write-images for the night-sky background estimate).
    inputBinding:
      prefix: --dl1
  dl2:
    type: File?
    doc: DL2 file of the run (geometry; gammaness if present).
    inputBinding:
      prefix: --dl2
  dl3:
    type: File?
    doc: DL3 event list of the run (GADF FITS).
    inputBinding:
      prefix: --dl3
  output_dir:
    type: string
    default: quality
    doc: Name of the output directory (metrics.h5, metrics.json, PNG plots, report.html).
    inputBinding:
      prefix: --output-dir
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/quality.yaml - reference ranges per metric), applied in order.
  title:
    type: string?
    doc: Title of the HTML report.
    inputBinding:
      prefix: --title
  no_plots:
    type: boolean?
    doc: Write no PNG plots (the report then has tables only).
    inputBinding:
      prefix: --no-plots
  time_bin:
    type: [float, string, "null"]
    doc: Width of the time bins of the stability checks in s, or with a unit (default 5 s).
    inputBinding:
      prefix: --time-bin
  min_intensity:
    type: float?
    doc: DL1 image cut - intensity in p.e. at least (default 50).
    inputBinding:
      prefix: --min-intensity
  reference:
    type: File?
    doc: metrics.h5 of a good run whose DL1 intensity and width histograms the run is compared with.
    inputBinding:
      prefix: --reference
  background_rate_reference:
    type: [float, string, "null"]
    doc: Expected DL3 background rate in Hz, or with a unit (adds the metric background_rate_ratio).
    inputBinding:
      prefix: --background-rate-reference
  numba_cache_dir:
    type: string
    default: ""
    doc: >
      Directory for numba's compiled-kernel cache, shared by all runs (e.g. on a node's local disk).
      Empty (default) uses numba's default location.
  log_level:
    type: string?
    doc: Logging verbosity (DEBUG, INFO, WARNING, ERROR).
    inputBinding:
      prefix: --log-level
arguments:
  - prefix: --provenance-log
    valueFrom: $(inputs.output_dir).provenance.json
outputs:
  report_dir:
    type: Directory
    doc: The report directory.
    outputBinding:
      glob: $(inputs.output_dir)
  report:
    type: File
    format: https://www.iana.org/assignments/media-types/text/html
    doc: Self-contained HTML report (plots embedded, metric tables with OK/WARNING/BAD).
    outputBinding:
      glob: $(inputs.output_dir)/report.html
  metrics:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Every metric with its value, reference ranges and status; status per level and of the run.
    outputBinding:
      glob: $(inputs.output_dir)/metrics.json
  metric_tables:
    type: File
    format: http://edamontology.org/format_3590
    doc: Metric tables with units (HDF5 under /quality/<level>, all metrics in /quality/metrics).
    outputBinding:
      glob: $(inputs.output_dir)/metrics.h5
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.output_dir).provenance.json
