# Engines behind make targets (included from the Makefile: `include mk/engines.mk`).
# They install Debian packages (slurm-wlm munge; podman runc debootstrap; swig libssl-dev python3-gfal2) with apt
# when missing, toil into the venv and dirac-cwl into build/dirac-venv; see docs/workflows.md.
.PHONY: test-slurm test-containers image test-workflows test-dirac

# toil-cwl-runner --batchSystem slurm on a single-node Slurm started on localhost (scripts/slurm/)
test-slurm: $(STAMP)
	VENV=$(abspath $(VENV)) scripts/slurm/test_slurm.sh

# localhost/iactpipe:latest built with debootstrap + podman, no registry
image:
	scripts/containers/build_image.sh

# cwltool --podman with every step in the image
test-containers: $(STAMP)
	VENV=$(abspath $(VENV)) scripts/containers/test_containers.sh

# dirac-cwl 1.3.0 in its local mode (DIRAC's job wrapper on this machine): a tool, a workflow, a failing job
test-dirac: $(STAMP)
	VENV=$(abspath $(VENV)) scripts/dirac/test_dirac.sh

# the workflow tests including the slow full-chain run
test-workflows: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" tests/test_workflows.py
