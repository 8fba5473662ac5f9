"""edgerec.federated imports on a device: no TensorFlow, dp_accounting only on demand."""

from __future__ import annotations

import json
import subprocess
import sys


def test_federated_imports_stay_light() -> None:
    code = (
        "import json, sys\n"
        "import edgerec.federated, edgerec.federated.secagg, edgerec.federated.local\n"
        "import edgerec.federated.dp, edgerec.federated.accountant, edgerec.federated.simulate\n"
        "heavy = ('tensorflow', 'keras', 'tf2onnx', 'dp_accounting', 'scipy')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
