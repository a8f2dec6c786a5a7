cwlVersion: v1.2
class: Workflow
label: Process one DL0 file to DL1 and DL2
doc: |
  One DL0 file (sim_telarray or iactpipe HDF5) to DL1 (iactpipe-dl0-to-dl1) and DL2 with the stereo geometry
  (iactpipe-dl1-to-dl2), DPPS-UC-130-1.2. The unit that process_simulations.cwl and observation_processing.cwl
  scatter over the files of a production. Outputs are named after the input (<name>.dl1.h5, <name>.dl1.dl2.h5).
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 2048
  - class: MultipleInputFeatureRequirement
inputs:
  dl0:
    type: File
    doc: DL0 file (sim_telarray .simtel[.gz|.zst] or iactpipe DL0 HDF5).
  dl0_to_dl1_config:
    type: File[]?
    doc: Configuration files of iactpipe-dl0-to-dl1 (schemas/config/dl0_to_dl1.yaml).
  dl1_to_dl2_config:
    type: File[]?
    doc: Configuration files of iactpipe-dl1-to-dl2 (schemas/config/dl1_to_dl2.yaml).
  write_images:
    type: boolean?
    doc: Also write the DL1 images (needed by the DL1 benchmarks).
  numba_cache_dir:
    type: string
    default: ""
    doc: Directory for numba's compiled-kernel cache shared by all steps (empty - numba's default location).
steps:
  make_dl1:
    run: ../steps/dl0_to_dl1.cwl
    in:
      inputs:
        source: [dl0]
        linkMerge: merge_flattened
      config: dl0_to_dl1_config
      write_images: write_images
      numba_cache_dir: numba_cache_dir
    out: [dl1, provenance_log]
  make_dl2:
    run: ../steps/dl1_to_dl2.cwl
    in:
      input: make_dl1/dl1
      config: dl1_to_dl2_config
      numba_cache_dir: numba_cache_dir
    out: [dl2, provenance_log]
outputs:
  dl1:
    type: File
    doc: DL1 file (parameters, and images with write_images).
    outputSource: make_dl1/dl1
  dl2:
    type: File
    doc: DL2 file (DL1 parameters and the reconstructed stereo geometry).
    outputSource: make_dl2/dl2
  dl1_provenance_log:
    type: File
    doc: Provenance record of the DL0 -> DL1 step (JSON).
    outputSource: make_dl1/provenance_log
  dl2_provenance_log:
    type: File
    doc: Provenance record of the DL1 -> DL2 step (JSON).
    outputSource: make_dl2/provenance_log
