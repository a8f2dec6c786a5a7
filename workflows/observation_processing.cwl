cwlVersion: v1.2
class: Workflow
label: Observation data processing - observed DL0 runs to DL3 with marginalized IRFs and quality metrics
doc: |
  Observation Data Processing (DPPS-UC-130-1.2, 1.6, 3.2.2): each observed run goes DL0 -> DL1 -> DL2
  (dl0_to_dl2.cwl) -> model predictions (iactpipe-apply-models) -> an IRF interpolated from the zenith grid at the
  run's mean zenith (iactpipe-marginalize-irf) -> a GADF DL3 file with the gammaness and direction cuts of the
  cuts file (iactpipe-dl2-to-dl3) -> data-quality metrics of the run over all its levels (iactpipe-quality), all
  scattered over the runs; then the DL3 files are gathered into one directory and indexed (iactpipe-dl3-index)
  so that gammapy's DataStore.from_dir opens it.
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 2048
  - class: ScatterFeatureRequirement
  - class: SubworkflowFeatureRequirement
  - class: MultipleInputFeatureRequirement
  - class: StepInputExpressionRequirement
inputs:
  runs:
    type: File[]
    doc: DL0 files of the observed runs (iactpipe DL0 HDF5 or sim_telarray), one run per file.
  energy_model:
    type: File
    doc: Energy model file (iactpipe-train-energy).
  gammaness_model:
    type: File
    doc: Gammaness model file (iactpipe-train-gammaness).
  disp_model:
    type: File?
    doc: Disp model file (iactpipe-train-disp).
  cuts:
    type: File
    doc: Cuts file of the IRF generation (iactpipe-optimize-cuts).
  irfs:
    type: File[]
    doc: IRF files of the zenith grid made with these cuts (>= 2, 3 or more recommended).
  object_name:
    type: string?
    doc: Name of the observed source (OBJECT keyword of the DL3 files).
  object_ra:
    type: ["null", float, string]
    doc: Right ascension (ICRS) of the source in deg (default - the pointing target).
  object_dec:
    type: ["null", float, string]
    doc: Declination (ICRS) of the source in deg (default - the pointing target).
  energy_reconstructor:
    type: string?
    doc: Energy table of the DL2 files for the DL3 step (default - that of iactpipe-dl2-to-dl3).
  gh_classifier:
    type: string?
    doc: Gammaness table of the DL2 files for the DL3 step (default - that of iactpipe-dl2-to-dl3).
  write_images:
    type: boolean?
    doc: Also write the DL1 images of the runs (iactpipe-quality then estimates the night-sky background per pixel).
  dl3_directory_name:
    type: string
    default: dl3
    doc: Name of the indexed DL3 directory.
  dl0_to_dl1_config:
    type: File[]?
    doc: Configuration files of iactpipe-dl0-to-dl1.
  dl1_to_dl2_config:
    type: File[]?
    doc: Configuration files of iactpipe-dl1-to-dl2.
  apply_config:
    type: File[]?
    doc: Configuration files of iactpipe-apply-models.
  marginalize_config:
    type: File[]?
    doc: Configuration files of iactpipe-marginalize-irf.
  dl3_config:
    type: File[]?
    doc: Configuration files of iactpipe-dl2-to-dl3.
  quality_config:
    type: File[]?
    doc: Configuration files of iactpipe-quality (reference ranges per metric).
  numba_cache_dir:
    type: string
    default: ""
    doc: Directory for numba's compiled-kernel cache shared by all steps (empty - numba's default location).
steps:
  process:
    run: dl0_to_dl2.cwl
    scatter: dl0
    in:
      dl0: runs
      write_images: write_images
      dl0_to_dl1_config: dl0_to_dl1_config
      dl1_to_dl2_config: dl1_to_dl2_config
      numba_cache_dir: numba_cache_dir
    out: [dl1, dl2, dl1_provenance_log, dl2_provenance_log]
  apply_models:
    run: ../steps/apply_models.cwl
    scatter: input
    in:
      input: process/dl2
      energy_model: energy_model
      gammaness_model: gammaness_model
      disp_model: disp_model
      config: apply_config
      numba_cache_dir: numba_cache_dir
    out: [dl2, provenance_log]
  marginalize_irf:
    run: ../steps/marginalize_irf.cwl
    scatter: observation
    in:
      irfs: irfs
      observation: apply_models/dl2
      output:
        valueFrom: $(inputs.observation.nameroot).irf.fits
      config: marginalize_config
      numba_cache_dir: numba_cache_dir
    out: [irf, provenance_log]
  dl2_to_dl3:
    run: ../steps/dl2_to_dl3.cwl
    scatter: [input, irf]
    scatterMethod: dotproduct
    in:
      input: apply_models/dl2
      irf: marginalize_irf/irf
      cuts: cuts
      object_name: object_name
      object_ra: object_ra
      object_dec: object_dec
      energy_reconstructor: energy_reconstructor
      gh_classifier: gh_classifier
      config: dl3_config
      numba_cache_dir: numba_cache_dir
    out: [dl3, provenance_log]
  quality_report:
    run: ../steps/quality.cwl
    scatter: [dl0, dl1, dl2, dl3]
    scatterMethod: dotproduct
    in:
      dl0: runs
      dl1: process/dl1
      dl2: apply_models/dl2
      dl3: dl2_to_dl3/dl3
      output_dir:
        valueFrom: $(inputs.dl0.nameroot).quality
      config: quality_config
      numba_cache_dir: numba_cache_dir
    out: [report_dir, metrics, provenance_log]
  gather:
    run: make_directory.cwl
    in:
      name: dl3_directory_name
      files: dl2_to_dl3/dl3
    out: [directory]
  index:
    run: ../steps/dl3_index.cwl
    in:
      directory: gather/directory
      numba_cache_dir: numba_cache_dir
    out: [dl3_directory, provenance_log]
outputs:
  dl3_directory:
    type: Directory
    doc: DL3 files of all runs with hdu-index.fits.gz and obs-index.fits.gz (gammapy DataStore.from_dir).
    outputSource: index/dl3_directory
  dl2:
    type: File[]
    doc: DL2 file of each run with the model predictions.
    outputSource: apply_models/dl2
  run_irfs:
    type: File[]
    doc: Marginalized IRF of each run (also stored in its DL3 file).
    outputSource: marginalize_irf/irf
  dl3:
    type: File[]
    doc: DL3 file of each run (the same files as in dl3_directory, for steps that take files).
    outputSource: dl2_to_dl3/dl3
  quality_reports:
    type: Directory[]
    doc: Quality report directory of each run (report.html, metrics.json with OK/WARNING/BAD, metrics.h5).
    outputSource: quality_report/report_dir
  provenance_logs:
    type: File[]
    doc: Provenance records of every step (JSON).
    outputSource: [process/dl1_provenance_log, process/dl2_provenance_log, apply_models/provenance_log, marginalize_irf/provenance_log, dl2_to_dl3/provenance_log, quality_report/provenance_log, index/provenance_log]
    linkMerge: merge_flattened
