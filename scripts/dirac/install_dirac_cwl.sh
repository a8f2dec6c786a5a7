#!/bin/bash
# Install dirac-cwl 1.3.0 (DIRAC's CWL front end; its default --local mode runs the DIRAC job wrapper here)
# into its own venv, $DIRAC_VENV (default build/dirac-venv), apart from the project's .venv: DIRAC pins many
# packages of its own.
#  - DIRAC needs M2Crypto (swig, libssl-dev) and gfal2's Python bindings. PyPI's gfal2-python does not build
#    against Debian bookworm's gfal2 2.21, so Debian's python3-gfal2 extension module (built for CPython 3.11) is
#    linked into the venv and a metadata-only dist-info tells pip it is there. The venv uses the project's
#    Python 3.11 (dirac-cwl's sandbox code needs tarfile's extraction filters, new in 3.11.4; Debian has 3.11.2).
#  - diracx-* are pinned to 0.0.14: dirac-cwl 1.3.0's local status mock reads JobStatusUpdate.model_dump()["Status"],
#    a key that later diracx versions renamed (every local job then fails in the wrapper).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIRAC_VENV=${DIRAC_VENV:-$REPO/build/dirac-venv}
if [ -x "$DIRAC_VENV/bin/dirac-cwl" ]; then exit 0; fi
need=()
for pkg in swig libssl-dev python3-gfal2; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "install_dirac_cwl: apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
"${PYTHON:-python3.11}" -m venv "$DIRAC_VENV"
site=$("$DIRAC_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
ln -sf /usr/lib/python3/dist-packages/gfal2.cpython-311-x86_64-linux-gnu.so "$site/"
"$DIRAC_VENV/bin/python" -c "import gfal2" || { echo "install_dirac_cwl: Debian's gfal2 module does not import"; exit 1; }
mkdir -p "$site/gfal2_python-1.12.0.dist-info"
printf 'Metadata-Version: 2.1\nName: gfal2-python\nVersion: 1.12.0\n' > "$site/gfal2_python-1.12.0.dist-info/METADATA"
echo debian > "$site/gfal2_python-1.12.0.dist-info/INSTALLER"
: > "$site/gfal2_python-1.12.0.dist-info/RECORD"
echo "install_dirac_cwl: pip install dirac-cwl==1.3.0 into $DIRAC_VENV (log: $DIRAC_VENV/pip.log)"
"$DIRAC_VENV/bin/pip" install --disable-pip-version-check dirac-cwl==1.3.0 \
  diracx-core==0.0.14 diracx-api==0.0.14 diracx-client==0.0.14 diracx-cli==0.0.14 > "$DIRAC_VENV/pip.log" 2>&1 \
  || { tail -20 "$DIRAC_VENV/pip.log"; exit 1; }
"$DIRAC_VENV/bin/dirac-cwl" --help >/dev/null
echo "install_dirac_cwl: dirac-cwl ready in $DIRAC_VENV"
