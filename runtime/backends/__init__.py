"""Inference backends of the runtime (LiteRT, ONNX Runtime) behind one interface."""
