"""Deployment: FishNet (alone or with its neck) exported to ONNX and checked against PyTorch
(:mod:`mmfish.deployment.onnx`). Not imported by ``import mmfish``: it needs onnx, onnxruntime
and onnxscript (requirements/runtime.txt)."""
