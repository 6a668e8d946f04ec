"""The agent's web console and ``/status``: routes of its ops endpoint (docs/console.md).

- ``config``: ``AgentOpsConfig``, the agent's ``ops:`` section (pydantic only);
- ``live``: ``LiveView``, the evaluation observer keeping each asset's newest values and history;
- ``snapshot``: the status document (``/status``, ``qxedge status``, the console's live updates);
- ``app``: ``Console``, the aiohttp routes and the lock requests; ``static/``: the page (no CDN).

Each name below loads its module on first use (a config loads no web library).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qxedge.core.lazy import lazy_exports

if TYPE_CHECKING:
    from qxedge.agent.console.app import Console
    from qxedge.agent.console.config import AgentOpsConfig
    from qxedge.agent.console.live import LiveView
    from qxedge.agent.console.snapshot import status

_HOME = {
    "AgentOpsConfig": ".config",
    "Console": ".app",
    "LiveView": ".live",
    "status": ".snapshot",
}
__all__ = ["AgentOpsConfig", "Console", "LiveView", "status"]

__getattr__ = lazy_exports(__name__, _HOME)
