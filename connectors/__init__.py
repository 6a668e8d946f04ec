"""Protocol connectors: sources of readings and sinks of setpoints.

``mqtt``, ``opcua``, ``modbus`` and ``outbox`` are packages of a config module (no driver), pure logic
and a runtime imported on first use; ``sparkplug*``, ``simulator``, ``readings``, ``confirm``,
``mosquitto_conf`` and ``plant`` (the agent ↔ connector contract) are modules. docs/architecture.md maps
what lives where.

Connectors import neither ``agent`` nor ``hybrid``; shared plumbing comes from ``qxedge.core``.
"""
