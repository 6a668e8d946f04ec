"""The agent sorts what its ``connectors:`` entries build by the narrow Protocols each satisfies."""

from __future__ import annotations

import json

from qxedge.agent.pipeline import Agent
from qxedge.connectors.plant import EvaluationObserver, ReadingSource, SetpointSink

from .conftest import edge_config


def test_connectors_are_sources_sinks_and_observers_by_what_they_implement() -> None:
    connectors = [
        {"mqtt": {"topics": ["plant/#"]}},
        {"sparkplug": {"group_id": "g", "edge_node_id": "n"}},  # reads and publishes upstream
        {"opcua": {"endpoint": "opc.tcp://127.0.0.1:1", "setpoints": {"line1/pump1": {"node": "ns=2;s=sp"}}}},
    ]
    agent = Agent(edge_config("mqtt://127.0.0.1:1", connectors=json.dumps(connectors)))  # never connected
    sparkplug, opcua = agent.plant
    assert agent.sources == [sparkplug, opcua]
    assert agent.sinks == [opcua], "a Sparkplug device gets setpoints as proposals in, never as writes"
    assert agent.observers == [sparkplug], "OPC UA publishes nothing upstream"
    assert isinstance(sparkplug, ReadingSource) and isinstance(sparkplug, EvaluationObserver)
    assert not isinstance(sparkplug, SetpointSink) and not isinstance(opcua, EvaluationObserver)
