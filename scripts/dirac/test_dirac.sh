#!/bin/bash
# `make test-dirac`: submit iactpipe's CWL to dirac-cwl 1.3.0 in its local mode (`dirac-cwl job submit`, which
# runs DIRAC's job wrapper here: input sandbox, cwltool, output registration in a mock file catalog):
#   1. the tool steps/simulate.cwl, its DL0 and provenance registered under LFNs (dirac:ExecutionHooks);
#   2. the workflow workflows/dl0_to_dl2.cwl on that DL0, staged as an input sandbox File -> DL1 + DL2 registered,
#      the DL2's lineage reaching the DL0;
#   3. the same workflow on a corrupt DL0: the job fails and registers nothing.
# dirac-cwl is installed apart from .venv (install_dirac_cwl.sh). Ends "test-dirac: N passed, M failed".
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
DIRAC_VENV=${DIRAC_VENV:-$REPO/build/dirac-venv}
WORK=${WORK:-$REPO/build/test-dirac}
"$REPO/scripts/dirac/install_dirac_cwl.sh" || exit 1
# dirac-cwl and its cwltool first, then the iactpipe-* executables (on a grid node: CVMFS or the image)
export PATH=$DIRAC_VENV/bin:$VENV/bin:$PATH
PY=$VENV/bin/python
STATUS_DIR=$("$DIRAC_VENV/bin/python" -c "import dirac_cwl.mocks.status as s; print(s.STATUS_DIR)")
rm -rf "$WORK"; mkdir -p "$WORK/steps" "$WORK/workflows"
cd "$WORK"
passed=0; failed=0
check() { # description command...
  if "${@:2}"; then echo "PASS: $1"; passed=$((passed + 1)); else echo "FAIL: $1"; failed=$((failed + 1)); fi
}
submit() { # cwl job-file log -> prints the final DIRAC job status
  dirac-cwl job submit "$1" --input-files "$2" > "$3" 2>&1
  local id
  id=$(grep -o 'JobRouter.job-[0-9]*' "$3" | head -1 | cut -d- -f2)
  [ -n "$id" ] && grep -o '| [A-Z][a-z]* *|' "$STATUS_DIR/status_$id" 2>/dev/null | tr -d '| ' | grep . | tail -1
}
LFN=/ctao/user/iactpipe/test
cp "$REPO"/steps/*.cwl steps/
"$PY" "$REPO/scripts/dirac/with_hints.py" "$REPO/steps/simulate.cwl" steps/simulate.dirac.cwl \
  dl0=$LFN/dl0 provenance_log=$LFN/log
"$PY" "$REPO/scripts/dirac/with_hints.py" "$REPO/workflows/dl0_to_dl2.cwl" workflows/dl0_to_dl2.dirac.cwl \
  dl1=$LFN/dl1 dl2=$LFN/dl2 dl2_provenance_log=$LFN/log

# 1. one tool
cat > simulate.yaml <<YAML
particle: gamma
n_showers: 400
seed: 5
images_only: true
output_filename: gamma_5.dl0.h5
numba_cache_dir: $WORK/numba_cache
YAML
status=$(submit steps/simulate.dirac.cwl simulate.yaml simulate.log)
check "simulate.cwl: DIRAC job Done (status: ${status:-none})" test "$status" = Done
DL0=filecatalog$LFN/dl0/gamma_5.dl0.h5
check "DL0 registered at LFN $LFN/dl0/gamma_5.dl0.h5" test -s "$DL0"
check "its provenance record registered" test -s "filecatalog$LFN/log/gamma_5.dl0.h5.provenance.json"
check "the DL0 validates against the table schemas" \
  "$PY" -c "import sys; from iactpipe.io.tables import validate_file; sys.exit(bool(validate_file('$DL0')))"

# 2. a workflow with a File input (input sandbox)
cp "$DL0" gamma_5.dl0.h5
cat > dl0_to_dl2.yaml <<YAML
dl0: {class: File, path: gamma_5.dl0.h5}
numba_cache_dir: $WORK/numba_cache
YAML
status=$(submit workflows/dl0_to_dl2.dirac.cwl dl0_to_dl2.yaml dl0_to_dl2.log)
check "dl0_to_dl2.cwl: DIRAC job Done (status: ${status:-none})" test "$status" = Done
DL2=filecatalog$LFN/dl2/gamma_5.dl0.dl1.dl2.h5
check "DL1 and DL2 registered" test -s "filecatalog$LFN/dl1/gamma_5.dl0.dl1.h5" -a -s "$DL2"
check "the DL2's lineage reaches the DL0 (product UUID)" "$PY" - "$DL2" gamma_5.dl0.h5 <<'PYEOF'
import sys
from iactpipe.provenance import read_lineage, read_product_uuid
dl0_uuid = read_product_uuid(sys.argv[2])
uuids = {inp.get("product_uuid") for rec in read_lineage(sys.argv[1]) for inp in rec.get("inputs", [])}
sys.exit(dl0_uuid not in uuids)
PYEOF

# 3. a failing job
printf 'not an HDF5 file' > broken.dl0.h5
cat > broken.yaml <<YAML
dl0: {class: File, path: broken.dl0.h5}
YAML
status=$(submit workflows/dl0_to_dl2.dirac.cwl broken.yaml broken.log)
check "corrupt DL0: DIRAC job Failed (status: ${status:-none})" test "$status" = Failed
check "corrupt DL0: nothing registered" test ! -e "filecatalog$LFN/dl2/broken.dl0.dl1.dl2.h5"
check "corrupt DL0: the step's one-line error reached the job log" grep -q "broken.dl0.h5" broken.log

echo "test-dirac: $passed passed, $failed failed (logs in $WORK)"
[ "$failed" = 0 ]
