"""Sparkplug connector (issue 7): work in progress."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from connectors.plant import PlantConnector


class SparkplugConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def connector(self, name: str) -> PlantConnector:
        raise NotImplementedError("the sparkplug connector is not built yet")
