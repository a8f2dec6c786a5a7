cwlVersion: v1.2
class: CommandLineTool
label: Simulate air showers and telescope data (DL0)
doc: |
  Toy air-shower + telescope simulation (gamma, proton, electron) on a real subarray
  (default CTAO-North Alpha): writes DL0 — R1 waveforms (optionally raw R0 + calibration
  coefficients) or calibrated images only — with all truth tables, the simulation run
  configuration and the shower distribution, in ctapipe's HDF5 data model.
  With observation=true it writes a simulated observation run instead: wobble pointing tracking
  a sky position, a point source plus proton/electron backgrounds arriving as a Poisson process,
  optional injected faults, and no truth in the DL0 file (the truth goes to truth_output_filename).
  Configuration keys not exposed as inputs are set with a config file.
baseCommand: iactpipe-simulate
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
  output_filename:
    type: string
    default: simulated.dl0.h5
    doc: Name of the DL0 HDF5 file to write.
    inputBinding:
      prefix: --output
  config:
    type:
      - "null"
      - type: array
        items: File
        inputBinding:
          prefix: --config
    doc: YAML configuration files (schemas/config/simulate.yaml), applied in order; inputs below override them.
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
  particle:
    type: string?
    doc: "Primary particle. Default from the config: gamma."
    inputBinding:
      prefix: --particle
  diffuse:
    type: boolean?
    doc: "Throw arrival directions uniformly into the view cone (default - false for gamma, true otherwise)."
    inputBinding:
      prefix: --diffuse
  n_showers:
    type: int?
    doc: "Number of showers to simulate (all of them enter the shower distribution histogram). Default from the config: 1000."
    inputBinding:
      prefix: --n-showers
  seed:
    type: int?
    doc: "Random seed; the same seed and configuration give identical output tables. Default from the config: 0."
    inputBinding:
      prefix: --seed
  obs_id:
    type: int?
    doc: "Observation block / simulation run ID written to every table. Default from the config: 1."
    inputBinding:
      prefix: --obs-id
  energy_min:
    type: ["null", float, string]
    doc: "Lowest primary energy. Number in TeV or a string such as '1 TeV'. Default from the config: 0.01."
    inputBinding:
      prefix: --energy-min
  energy_max:
    type: ["null", float, string]
    doc: "Highest primary energy. Number in TeV or a string such as '1 TeV'. Default from the config: 300.0."
    inputBinding:
      prefix: --energy-max
  spectral_index:
    type: float?
    doc: "Power-law index of the thrown spectrum, dN/dE ~ E^index. Default from the config: -2.0."
    inputBinding:
      prefix: --spectral-index
  scatter_radius:
    type: ["null", float, string]
    doc: "Radius of the disc (centred on the array reference, in the plane given by core_plane) into which cores are thrown. Number in m or a string such as '1 m'. Default from the config: 1000.0."
    inputBinding:
      prefix: --scatter-radius
  core_plane:
    type: string?
    doc: "Plane of the core disc: ground (horizontal) or shower (perpendicular to the shower axis; effective areas right at every zenith angle). Default from the config: shower."
    inputBinding:
      prefix: --core-plane
  viewcone:
    type: ["null", float, string]
    doc: "Radius of the cone around the pointing into which diffuse primaries are thrown. Number in deg or a string such as '1 deg'. Default from the config: 10.0."
    inputBinding:
      prefix: --viewcone
  source_offset:
    type: ["null", float, string]
    doc: "Offset of a point-like source from the pointing (towards higher altitude). Number in deg or a string such as '1 deg'. Default from the config: 0.0."
    inputBinding:
      prefix: --source-offset
  zenith:
    type: ["null", float, string]
    doc: "Zenith angle of the (fixed) pointing. Number in deg or a string such as '1 deg'. Default from the config: 20.0."
    inputBinding:
      prefix: --zenith
  azimuth:
    type: ["null", float, string]
    doc: "Azimuth of the pointing (0 = north, 90 = east). Number in deg or a string such as '1 deg'. Default from the config: 0.0."
    inputBinding:
      prefix: --azimuth
  subarray:
    type: string?
    doc: "Packaged subarray name or path of an HDF5 file with /configuration/instrument. Default from the config: CTAO-North-Alpha."
    inputBinding:
      prefix: --subarray
  telescopes:
    type: int[]?
    doc: "Simulate only these tel_ids (empty = all telescopes of the subarray)."
    inputBinding:
      prefix: --telescopes
  observation_altitude:
    type: ["null", float, string]
    doc: "Height of the array reference above sea level (default - from the subarray's reference position, else 2200 m). Number in m or a string such as '1 m'."
    inputBinding:
      prefix: --observation-altitude
  images_only:
    type: boolean?
    doc: "Write calibrated images + peak times (DL1 images, noise added at image level) instead of waveforms. Default from the config: False."
    inputBinding:
      prefix: --images-only
  write_r0:
    type: boolean?
    doc: "Also write raw R0 samples (both gains) and the per-pixel calibration coefficients. Default from the config: False."
    inputBinding:
      prefix: --write-r0
  compact_dl0:
    type: boolean?
    doc: "Write the compact DL0 instead of R1 waveforms - the raw samples of the selected gain (uint16) and the per-pixel calibration coefficients, ~0.3 of the bytes of R1. Default from the config: False."
    inputBinding:
      prefix: --compact-dl0
  min_telescopes:
    type: int?
    doc: "Array trigger - minimum number of triggered telescopes. Default from the config: 2."
    inputBinding:
      prefix: --min-telescopes
  trigger_threshold:
    type: float?
    doc: "Telescope trigger - pixel threshold in p.e. (Cherenkov + night-sky background in the trigger window). Default from the config: 6.0."
    inputBinding:
      prefix: --trigger-threshold
  trigger_neighbours:
    type: int?
    doc: "Telescope trigger - a pixel above threshold also needs this many neighbours above threshold. Default from the config: 2."
    inputBinding:
      prefix: --trigger-neighbours
  nsb_rate:
    type: ["null", float, string]
    doc: "Night-sky background rate per pixel in p.e. per ns. Number in GHz or a string such as '1 GHz'. Default from the config: 0.25."
    inputBinding:
      prefix: --nsb-rate
  efficiency:
    type: float?
    doc: "Fraction of Cherenkov photons (300-600 nm) reaching the mirror that become p.e. (mirror, cones, window, QE). Default from the config: 0.1."
    inputBinding:
      prefix: --efficiency
  psf:
    type: ["null", float, string]
    doc: "Gaussian sigma of the optical point-spread function. Number in deg or a string such as '1 deg'. Default from the config: 0.035."
    inputBinding:
      prefix: --psf
  truth_output_filename:
    type: string?
    doc: "With observation: name of the HDF5 file receiving the run's truth (per event component, energy, direction, core; components; injected faults)."
    inputBinding:
      prefix: --truth-output
  observation:
    type: boolean?
    doc: "Simulate an observation run instead of a fixed-pointing simulation with truth. Default from the config: False."
    inputBinding:
      prefix: --observation
  start_time:
    type: string?
    doc: "Observation run start (UTC, ISO 8601). Default from the config: 2025-01-15T00:30:00."
    inputBinding:
      prefix: --start-time
  duration:
    type: ["null", float, string]
    doc: "Observation run duration. Number in s or a string such as '5 min'. Default from the config: 300.0."
    inputBinding:
      prefix: --duration
  source_name:
    type: string?
    doc: "Name of the observed source. Default from the config: Crab."
    inputBinding:
      prefix: --source-name
  source_ra:
    type: ["null", float, string]
    doc: "Right ascension (ICRS) of the source. Number in deg or a string such as '1 deg'. Default from the config: 83.6331."
    inputBinding:
      prefix: --source-ra
  source_dec:
    type: ["null", float, string]
    doc: "Declination (ICRS) of the source. Number in deg or a string such as '1 deg'. Default from the config: 22.0145."
    inputBinding:
      prefix: --source-dec
  wobble_offset:
    type: ["null", float, string]
    doc: "Angular distance between the source and the tracked position. Number in deg or a string such as '1 deg'. Default from the config: 0.7."
    inputBinding:
      prefix: --wobble-offset
  wobble_angle:
    type: ["null", float, string]
    doc: "Position angle of the pointing seen from the source, north through east. Number in deg or a string such as '1 deg'. Default from the config: 0.0."
    inputBinding:
      prefix: --wobble-angle
  components:
    type: string[]?
    doc: "Shower components of the observation run (gamma, proton, electron). Default from the config: all three."
    inputBinding:
      prefix: --components
  flux_scale:
    type: float?
    doc: "Source flux in units of pyirf's CRAB_HEGRA spectrum. Default from the config: 1.0."
    inputBinding:
      prefix: --flux-scale
  background_scale:
    type: float?
    doc: "Proton and electron fluxes in units of pyirf's IRFDOC spectra. Default from the config: 0.001."
    inputBinding:
      prefix: --background-scale
  gamma_energy_min:
    type: ["null", float, string]
    doc: "Lowest energy of source gammas. Number in TeV or a string such as '1 TeV'. Default from the config: 0.015."
    inputBinding:
      prefix: --gamma-energy-min
  proton_energy_min:
    type: ["null", float, string]
    doc: "Lowest energy of background protons. Number in TeV or a string such as '1 TeV'. Default from the config: 0.05."
    inputBinding:
      prefix: --proton-energy-min
  electron_energy_min:
    type: ["null", float, string]
    doc: "Lowest energy of background electrons. Number in TeV or a string such as '1 TeV'. Default from the config: 0.015."
    inputBinding:
      prefix: --electron-energy-min
  background_viewcone:
    type: ["null", float, string]
    doc: "Radius of the cone around the pointing for background directions. Number in deg or a string such as '1 deg'. Default from the config: 6.0."
    inputBinding:
      prefix: --background-viewcone
  fault_telescope_off:
    type: float[]?
    doc: "Fault injection: telescopes taking no data, triples 'tel_id start stop' (s since the run start)."
    inputBinding:
      prefix: --fault-telescope-off
  fault_dead_pixels:
    type: float?
    doc: "Fault injection: fraction of dead pixels per telescope. Default from the config: 0.0."
    inputBinding:
      prefix: --fault-dead-pixels
  fault_nsb_jump_time:
    type: ["null", float, string]
    doc: "Fault injection: time from which the night-sky background is multiplied. Number in s or a string such as '1 s'."
    inputBinding:
      prefix: --fault-nsb-jump-time
  fault_nsb_jump_factor:
    type: float?
    doc: "Fault injection: factor of the night-sky background jump. Default from the config: 3.0."
    inputBinding:
      prefix: --fault-nsb-jump-factor
  fault_cloud_start:
    type: ["null", float, string]
    doc: "Fault injection: start of a cloud passage. Number in s or a string such as '1 s'."
    inputBinding:
      prefix: --fault-cloud-start
  fault_cloud_stop:
    type: ["null", float, string]
    doc: "Fault injection: end of the cloud passage. Number in s or a string such as '1 s'."
    inputBinding:
      prefix: --fault-cloud-stop
  fault_cloud_transmission:
    type: float?
    doc: "Fault injection: transmission of the cloud. Default from the config: 0.3."
    inputBinding:
      prefix: --fault-cloud-transmission
arguments:
  - prefix: --provenance-log
    valueFrom: $(inputs.output_filename).provenance.json
outputs:
  dl0:
    type: File
    format: http://edamontology.org/format_3590
    doc: The simulated DL0 file (HDF5, ctapipe data model).
    outputBinding:
      glob: $(inputs.output_filename)
  truth:
    type: File?
    format: http://edamontology.org/format_3590
    doc: The truth of a simulated observation run (HDF5), when truth_output_filename is given.
    outputBinding:
      glob: $(inputs.truth_output_filename)
  provenance_log:
    type: File
    format: https://www.iana.org/assignments/media-types/application/json
    doc: Provenance record of this run (JSON).
    outputBinding:
      glob: $(inputs.output_filename).provenance.json
