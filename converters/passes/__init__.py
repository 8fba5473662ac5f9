"""The converter's passes, in pipeline order.

``distil`` (teacher -> Keras student; its loss in ``kd_loss``) -> ``savedmodel``
(Keras student -> static-signature SavedModel) -> ``export``
(runs ``tflite`` / ``onnx`` for each precision and ``gpu`` for the GPU-delegate
variant, whose operators ``gpu_ops`` certifies) -> ``validate`` (every artifact through the
runtime's backends) -> ``quality`` (retention against the teacher) ->
``package`` (manifest + atomic bundle). Each module holds a frozen options
dataclass and one ``run()``; :mod:`edgerec.converters.pipeline` wires them.
Heavy imports (TensorFlow, tf2onnx, onnx) stay inside the passes' functions.
"""
