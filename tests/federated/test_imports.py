"""edgerec.federated imports on a device: no TensorFlow, dp_accounting only on demand."""

from __future__ import annotations

from tests.import_check import heavy_modules_loaded


def test_federated_imports_stay_light() -> None:
    code = (
        "import edgerec.federated, edgerec.federated.secagg, edgerec.federated.local\n"
        "import edgerec.federated.dp, edgerec.federated.accountant, edgerec.federated.wire"
    )
    heavy = ("tensorflow", "keras", "tf2onnx", "dp_accounting", "scipy")
    assert heavy_modules_loaded(code, heavy) == []
