cwlVersion: v1.2
class: Workflow
label: Process simulations - DL0 to DL1 and DL2 for many files, then merge
doc: |
  Simulation processing of one particle type and one production configuration (DPPS-UC-130-1.2, 1.8): every
  DL0 file goes through DL0 -> DL1 -> DL2 (dl0_to_dl2.cwl, scattered, one job per file), then the DL2 files are
  merged into one file named output_name. The DL1 files are outputs too (benchmarks, re-processing).
  The files of one call must have distinct (obs_id, event_id) pairs, e.g. one obs_id per simulation run.
requirements:
  - class: ResourceRequirement
    coresMin: 1
    ramMin: 2048
  - class: ScatterFeatureRequirement
  - class: SubworkflowFeatureRequirement
  - class: MultipleInputFeatureRequirement
inputs:
  dl0_files:
    type: File[]
    doc: DL0 files of one particle type (sim_telarray or iactpipe DL0 HDF5), one job per file.
  output_name:
    type: string
    default: merged.dl2.h5
    doc: Name of the merged DL2 file.
  dl0_to_dl1_config:
    type: File[]?
    doc: Configuration files of iactpipe-dl0-to-dl1 (schemas/config/dl0_to_dl1.yaml).
  dl1_to_dl2_config:
    type: File[]?
    doc: Configuration files of iactpipe-dl1-to-dl2 (schemas/config/dl1_to_dl2.yaml).
  merge_config:
    type: File[]?
    doc: Configuration files of iactpipe-merge (schemas/config/merge.yaml).
  write_images:
    type: boolean?
    doc: Also write the DL1 images (needed by the DL1 benchmarks); the merged DL2 file never has them.
  numba_cache_dir:
    type: string
    default: ""
    doc: Directory for numba's compiled-kernel cache shared by all jobs (empty - numba's default location).
steps:
  process:
    run: dl0_to_dl2.cwl
    scatter: dl0
    in:
      dl0: dl0_files
      dl0_to_dl1_config: dl0_to_dl1_config
      dl1_to_dl2_config: dl1_to_dl2_config
      write_images: write_images
      numba_cache_dir: numba_cache_dir
    out: [dl1, dl2, dl1_provenance_log, dl2_provenance_log]
  merge_dl2:
    run: ../steps/merge.cwl
    in:
      inputs: process/dl2
      output_name: output_name
      config: merge_config
      numba_cache_dir: numba_cache_dir
    out: [merged, provenance_log]
outputs:
  dl2:
    type: File
    doc: Merged DL2 file of all inputs.
    outputSource: merge_dl2/merged
  dl1:
    type: File[]
    doc: DL1 file of each input.
    outputSource: process/dl1
  provenance_logs:
    type: File[]
    doc: Provenance records of every step (JSON).
    outputSource: [process/dl1_provenance_log, process/dl2_provenance_log, merge_dl2/provenance_log]
    linkMerge: merge_flattened
