"""edgerec.converters: the release-pipeline converter (``edgerec convert``).

Distils the teacher into a student, exports TFLite and ONNX artifacts, quantizes,
validates them in their real interpreters and writes a bundle. Imports
TensorFlow, tf2onnx and onnx lazily inside its passes.
"""
