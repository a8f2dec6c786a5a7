"""``iactpipe-simulate``: toy air showers + telescopes -> DL0 file in ctapipe's HDF5 layout.

Example::

    iactpipe-simulate --particle gamma --n-showers 1000 --seed 1 --output gamma.dl0.h5
    iactpipe-simulate --particle proton --n-showers 100000 --images-only --output proton.dl1.h5
    iactpipe-simulate --observation --duration 300 --seed 1 --output run.dl0.h5 --truth-output run.truth.h5

The output holds R1 waveforms (``--write-r0`` adds raw R0 and the calibration
coefficients) or, with ``--images-only``, calibrated images; always the full truth,
the triggers and the histogram of all thrown showers (for IRF normalisation).
With ``--observation`` it is a run as a telescope would record it (event times,
tracking pointing, no truth); the truth goes to ``--truth-output``.
"""

import sys
import time
from pathlib import Path

from ..cli import Step, progress
from ..errors import ConfigError, UsageError
from ..io.dl0 import DL0Writer
from ..simulation.simulator import ShowerSimulator, SimulationConfig, load_subarray

__all__ = ["SimulateStep", "main"]


class SimulateStep(Step):
    name = "simulate"
    description = ("Simulate gamma, proton or electron air showers seen by a subarray (toy physics model) "
                   "and write DL0 (R1/R0 waveforms or calibrated images) with full truth in ctapipe's layout.")

    def add_arguments(self, parser):
        parser.add_argument("-o", "--output", required=True, help="output HDF5 file (e.g. gamma.dl0.h5)")
        parser.add_argument("--truth-output", default=None,
                            help="with --observation: write the run's truth (per event component, energy, "
                                 "direction, core; components; injected faults) to this HDF5 file")

    def run(self, ctx):
        cfg = ctx.config
        sim_config = SimulationConfig.from_config(cfg)
        sim_config.check()
        if Path(cfg["subarray"]).is_file():
            ctx.input(cfg["subarray"], role="instrument")
        subarray = load_subarray(cfg["subarray"], cfg["telescopes"])
        if cfg["min_telescopes"] > subarray.n_tels:
            raise ConfigError(f"key 'min_telescopes': {cfg['min_telescopes']} telescopes can never trigger "
                              f"with the {subarray.n_tels} selected")
        if sim_config.images_only:
            mode, levels = "images", ("DL1_IMAGES",)
        elif sim_config.write_r0:
            mode, levels = "r0", ("R0", "R1")
        elif sim_config.compact_dl0:
            mode, levels = "dl0", ("DL0",)
        else:
            mode, levels = "r1", ("R1",)
        if cfg["observation"]["enabled"]:
            return self.run_observation(ctx, sim_config, subarray, mode, levels)
        if ctx.args.truth_output is not None:
            raise UsageError("--truth-output: only with --observation (a simulation file holds its own truth)")
        simulator = ShowerSimulator(sim_config, subarray)
        tmp = ctx.output(ctx.args.output, role="DL0 simulation", data_levels=levels)
        t0 = time.perf_counter()
        n_chunks = -(-sim_config.n_showers // sim_config.chunk_size)
        with DL0Writer(tmp, simulator.run_info(), mode=mode) as writer:
            for batch in progress(simulator.iter_batches(), total=n_chunks, desc="chunks"):
                writer.write(batch)
            writer.close(simulator.shower_distribution)
        elapsed = time.perf_counter() - t0
        ctx.log.info(
            "%d %s showers thrown, %d passed the pre-selection, %d triggered (%s, %d telescopes); "
            "%.0f showers/s", simulator.n_thrown, sim_config.particle, simulator.n_candidates,
            simulator.n_triggered, subarray.name, subarray.n_tels, simulator.n_thrown / max(elapsed, 1e-9))
        if simulator.n_triggered == 0:
            ctx.log.warning("no shower triggered the array: %s has the run configuration and shower "
                            "distribution but no events", ctx.args.output)

    def run_observation(self, ctx, sim_config, subarray, mode, levels):
        from ..simulation.observation import ObservationSimulator, finish_observed_file, write_truth

        observation = ObservationSimulator(sim_config, ctx.config["observation"], subarray)
        obs = observation.obs
        for comp, expected in zip(observation.components, observation.expected_showers, strict=True):
            ctx.log.info("%s: %s x %g, %.3g-%.3g TeV, expect %.0f showers in %.0f s", comp.name, comp.spectrum,
                         comp.scale, comp.energy_min, comp.energy_max, expected, obs.duration)
        tmp = ctx.output(ctx.args.output, role="DL0 observation (simulated)", data_levels=levels)
        truth_tmp = None
        if ctx.args.truth_output is not None:
            truth_tmp = ctx.output(ctx.args.truth_output, role="simulation truth of the observation")
        t0 = time.perf_counter()
        slices = observation.slices()
        with DL0Writer(tmp, observation.run_info(), mode=mode) as writer:
            for batch in progress(observation.iter_batches(), total=len(slices), desc="slices"):
                writer.write(batch)
        finish_observed_file(tmp, observation)
        if truth_tmp is not None:
            write_truth(truth_tmp, observation)
        elapsed = time.perf_counter() - t0
        counts = ", ".join(f"{c.name} {n_t} thrown / {n_e} events" for c, n_t, n_e in
                           zip(observation.components, observation.n_thrown, observation.n_triggered, strict=True))
        ctx.log.info("observation %d: %s at %.2f deg wobble, %.0f s from %s UTC; %s; %d events (%.1f Hz); %.0f s",
                     sim_config.obs_id, obs.source_name, obs.wobble_offset, obs.duration, observation.start.isot,
                     counts, observation.n_events, observation.n_events / obs.duration, elapsed)
        if observation.faults.any:
            ctx.log.info("injected faults: %s", observation.faults.records())


def main():
    sys.exit(SimulateStep().main())
