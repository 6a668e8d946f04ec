"""Protocol connectors: sources of readings and sinks of setpoints (MQTT, simulated plant).

Connectors import neither ``agent`` nor ``hybrid``.
"""
