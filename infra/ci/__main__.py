"""Pulumi program entry of the CI identity project (infra/ci/Pulumi.yaml). Pulumi runs this file with infra/ci/ as
the program directory, so the repository root is put on the path for `import infra.*`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.ci.program import main

main()
