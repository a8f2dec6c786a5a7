#!/bin/bash
# `make test-slurm`: run process_simulations.cwl and train_models.cwl with toil-cwl-runner on a real Slurm
# started on localhost (start_slurm.sh), check in Slurm's job log (jobcomp) that the steps ran as Slurm jobs,
# and that a restart after the leader was killed resumes without re-running finished steps.
# Needs toil (pip install 'toil[cwl]==9.6.0' into the venv, done here when missing). Ends "test-slurm: N passed, M failed".
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
export PATH=$VENV/bin:$PATH
WORK=${WORK:-$REPO/build/test-slurm}
export SLURM_DIR=${SLURM_DIR:-$REPO/build/slurm}
export TMPDIR=$WORK/tmp
rm -rf "$WORK"; mkdir -p "$WORK"/{tmp,logs,data}
cd "$WORK"
passed=0; failed=0
check() { # description command...
  if "${@:2}"; then echo "PASS: $1"; passed=$((passed + 1)); else echo "FAIL: $1"; failed=$((failed + 1)); fi
}

command -v toil-cwl-runner >/dev/null || "$VENV/bin/pip" install -q 'toil[cwl]==9.6.0' || exit 1
SLURM_CPUS=${SLURM_CPUS:-4} "$REPO/scripts/slurm/start_slurm.sh" || exit 1
source "$SLURM_DIR/env.sh"
[ "${KEEP_SLURM:-0}" = 1 ] || trap '"$REPO/scripts/slurm/stop_slurm.sh" >/dev/null' EXIT
JOBCOMP=$SLURM_DIR/log/jobcomp.log
touch "$JOBCOMP"
export NUMBA_CACHE=$WORK/numba_cache

# tiny inputs: 3 gamma runs and 1 proton run (DL0), the proton run also as DL2 for training
sim() { iactpipe-simulate --particle "$1" --n-showers "$2" --seed "$3" --obs-id "$3" --images-only \
          --energy-min "$4" --energy-max "100 TeV" --spectral-index -2 --scatter-radius "$5" "${@:6}" \
          --output "data/$1_$3.dl0.h5" --log-level WARNING; }
for seed in 41 42 43; do sim gamma 800 $seed "0.1 TeV" "600 m" --diffuse --viewcone "2 deg" || exit 1; done
sim proton 3000 44 "0.2 TeV" "800 m" --viewcone "5 deg" || exit 1
iactpipe-dl0-to-dl1 data/proton_44.dl0.h5 --output data/proton.dl1.h5 --log-level WARNING \
  && iactpipe-dl1-to-dl2 data/proton.dl1.h5 --output data/proton.dl2.h5 --log-level WARNING || exit 1
cat > ps.yaml <<YAML
dl0_files:
  - {class: File, path: data/gamma_41.dl0.h5}
  - {class: File, path: data/gamma_42.dl0.h5}
  - {class: File, path: data/gamma_43.dl0.h5}
output_name: gamma.dl2.h5
numba_cache_dir: $NUMBA_CACHE
YAML

toil_slurm() { # jobstore outdir cwl job [extra toil options]
  toil-cwl-runner --batchSystem slurm --jobStore "file:$WORK/$1" --outdir "$WORK/$2" --batchLogsDir "$WORK/logs" \
    --workDir "$TMPDIR" --logLevel INFO --logFile "$WORK/$1.log" "${@:5}" "$3" "$4"
}
n_jobs() { grep -c "$1" "$JOBCOMP" 2>/dev/null || true; }

# 1. process_simulations.cwl on Slurm
before=$(wc -l < "$JOBCOMP")
t0=$(date +%s)
toil_slurm js_ps out_ps "$REPO/workflows/process_simulations.cwl" ps.yaml --clean always > ps.json 2> ps.err
rc=$?
echo "process_simulations.cwl on Slurm: exit $rc in $(( $(date +%s) - t0 )) s"
check "process_simulations.cwl succeeded on Slurm" test $rc = 0
check "merged DL2 written" test -s out_ps/gamma.dl2.h5
new=$(tail -n +"$((before + 1))" "$JOBCOMP")
check "its steps ran as COMPLETED Slurm jobs (jobcomp: $(grep -c 'JobState=COMPLETED' <<<"$new") jobs)" \
  test "$(grep 'JobState=COMPLETED' <<<"$new" | grep -c -E 'make_dl1|make_dl2|dl0_to_dl1|dl1_to_dl2|merge')" -ge 3

# 2. train_models.cwl on Slurm
cat > train.yaml <<YAML
gamma: [{class: File, path: out_ps/gamma.dl2.h5}]
background: {class: File, path: data/proton.dl2.h5}
cv_folds: 2
numba_cache_dir: $NUMBA_CACHE
YAML
before=$(wc -l < "$JOBCOMP")
t0=$(date +%s)
toil_slurm js_train out_train "$REPO/workflows/train_models.cwl" train.yaml --clean always > train.json 2> train.err
rc=$?
echo "train_models.cwl on Slurm: exit $rc in $(( $(date +%s) - t0 )) s"
check "train_models.cwl succeeded on Slurm" test $rc = 0
check "three models written" test "$(ls out_train/*_model.h5 2>/dev/null | wc -l)" = 3
new=$(tail -n +"$((before + 1))" "$JOBCOMP")
check "training steps ran as COMPLETED Slurm jobs" \
  test "$(grep 'JobState=COMPLETED' <<<"$new" | grep -c -E 'train_energy|train_gammaness|train_disp|split')" -ge 4

# 3. kill the leader once a step has finished, cancel its Slurm jobs, restart: finished steps are not re-run
sed -i 's/output_name: gamma.dl2.h5/output_name: restart.dl2.h5/' ps.yaml
before=$(wc -l < "$JOBCOMP")
# the subshell execs toil, so $! is the leader's own pid
( exec toil-cwl-runner --batchSystem slurm --jobStore "file:$WORK/js_restart" --outdir "$WORK/out_restart" \
    --batchLogsDir "$WORK/logs" --workDir "$TMPDIR" --logLevel INFO --logFile "$WORK/js_restart.1.log" \
    --clean never "$REPO/workflows/process_simulations.cwl" ps.yaml > restart1.json 2> restart1.err ) &
leader=$!
done_before=0
for _ in $(seq 600); do
  done_before=$(tail -n +"$((before + 1))" "$JOBCOMP" | grep 'JobState=COMPLETED' | grep -c -E 'make_dl1|dl0_to_dl1')
  [ "$done_before" -ge 1 ] && break
  kill -0 $leader 2>/dev/null || break
  sleep 0.5
done
leader_alive=0; kill -0 $leader 2>/dev/null && leader_alive=1
kill -9 $leader 2>/dev/null; wait $leader 2>/dev/null
jobs=$(squeue -h -o %i); [ -n "$jobs" ] && scancel $jobs; sleep 2
echo "leader killed after $done_before finished DL0->DL1 job(s)"
check "a step finished while the leader was still running" test "$done_before" -ge 1 -a "$leader_alive" = 1
check "the killed run did not finish" test ! -s out_restart/restart.dl2.h5
toil_slurm js_restart out_restart "$REPO/workflows/process_simulations.cwl" ps.yaml --restart --clean always \
  > restart2.json 2> restart2.err  # toil_slurm logs to js_restart.log
rc=$?
check "restart after the killed leader succeeded" test $rc = 0
check "restarted run wrote the merged DL2" test -s out_restart/restart.dl2.h5
new=$(tail -n +"$((before + 1))" "$JOBCOMP")
completed=$(grep 'JobState=COMPLETED' <<<"$new" | grep -c -E 'make_dl1|dl0_to_dl1')
check "each DL0->DL1 step completed once over both runs ($completed for 3 files)" test "$completed" = 3
lineage=$(iactpipe-provenance out_restart/restart.dl2.h5 | grep -c "made by iactpipe-dl0-to-dl1")
check "the restarted product's lineage holds the 3 DL0->DL1 activities" test "$lineage" = 3

echo "Slurm job log: $JOBCOMP; toil logs: $WORK/*.log, $WORK/logs"
echo "test-slurm: $passed passed, $failed failed"
[ "$failed" = 0 ]
