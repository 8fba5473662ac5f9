"""The converter's passes, in pipeline order.

``savedmodel`` (Keras student -> static-signature SavedModel) -> ``tflite`` /
``onnx`` (one artifact per precision) -> ``gpu`` (the GPU-delegate variant;
``gpu_ops`` certifies operators) -> ``validate`` (every artifact through the
runtime's backends) -> ``quality`` (retention against the teacher) ->
``package`` (manifest + atomic bundle). Each module holds a frozen options
dataclass and one ``run()``; :mod:`edgerec.converters.pipeline` wires them.
Heavy imports (TensorFlow, tf2onnx, onnx) stay inside the passes' functions.
"""
