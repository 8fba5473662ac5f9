"""edgerec: an edge / on-device sequential recommendation SDK.

The core package is TensorFlow-free: it holds the contracts shared by the cloud
side (teacher, converter, coordinator) and the device runtime — vocabulary,
feature spec, metrics, data loading. Cloud-side modules import TensorFlow lazily.
"""

from edgerec.errors import EdgerecError, InputError

__version__ = "0.1.0"

__all__ = ["EdgerecError", "InputError", "__version__"]
