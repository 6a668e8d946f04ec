"""Example configs, the broker/systemd/Grafana files and the small ONNX model, shipped as package data.

Read them with ``importlib.resources.files("qxedge.configs")``; nothing here is imported as code.
"""

__all__: list[str] = []  # data only: no code to export
