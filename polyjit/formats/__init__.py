"""Model importers (ONNX, TFLite, GGUF, safetensors, PyTorch checkpoints): not yet built (issues 6 and 7)."""
