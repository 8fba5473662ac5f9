"""The cloud-side BERT4Rec teacher (Keras 3 / TensorFlow).

TensorFlow is imported lazily: importing :mod:`edgerec.teacher` or its config
loads no TF; building, training or loading a model does.
"""

from edgerec.teacher.config import TeacherConfig

__all__ = ["TeacherConfig"]
