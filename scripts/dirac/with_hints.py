"""Copy a CWL file and add DIRAC hints to it, as a production manager would for a submission.

    python with_hints.py SRC DEST OUTPUT_ID=LFN_DIR [OUTPUT_ID=LFN_DIR ...]

adds ``dirac:ExecutionHooks`` with ``output_paths`` (outputs registered in the file catalog under LFN_DIR)
and ``dirac:Scheduling``; ``run:`` references stay relative, so DEST must sit where SRC's references resolve.
"""

import sys

from ruamel.yaml import YAML

src, dest, *pairs = sys.argv[1:]
yaml = YAML()
doc = yaml.load(open(src))
doc["$namespaces"] = {"dirac": "https://diracgrid.org/cwl#"}
doc["hints"] = [
    {"class": "dirac:ExecutionHooks", "output_paths": dict(pair.split("=", 1) for pair in pairs)},
    {"class": "dirac:Scheduling", "priority": 5},
]
with open(dest, "w") as fh:
    yaml.dump(doc, fh)
