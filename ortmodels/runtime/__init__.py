"""ONNX Runtime side: sessions, pooling and the ONNX model classes (no torch here)."""
