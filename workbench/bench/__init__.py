"""`workbench bench`: our runtime against torch and ONNX Runtime, one process per engine."""
