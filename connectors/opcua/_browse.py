"""Browse an OPC UA server's address space: the variables below a root, with their node id, browse path,
data type, current value and access (what ``qxedge discover opcua://`` shows).

Level by level from the root: one Browse request per level (at most ``_CHUNK`` nodes per request,
continuation points followed), then one Read of every variable's DataType, Value and UserAccessLevel,
then one Read of the names of the data types that are not the standard's built-in ones. The walk
follows hierarchical references except HasProperty (a variable's EURange, EngineeringUnits... are no
signals), visits each node once (Organizes may form cycles), and stops at ``depth`` levels below the
root or ``max_nodes`` nodes, whichever comes first, saying which. Nodes of namespace 0 (the standard's
own: Server, Aliases, ...) are passed over unless ``include_standard``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.uaerrors import UaError

from qxedge.connectors.opcua._session import (
    HIERARCHICAL,
    Identity,
    describe,
    open_session,
    relative_path,
    status_name,
)
from qxedge.connectors.opcua._values import number
from qxedge.connectors.opcua.nodes import NodeIdSpec, parse_node
from qxedge.core.errors import ConnectorError

_CHUNK = 500  # nodes per Browse / Read request
_ROOT = ua.NodeId(ua.Int32(ObjectIds.RootFolder))
_HAS_PROPERTY = ua.NodeId(ua.Int32(ObjectIds.HasProperty))
_CURRENT_WRITE = 0x02  # AccessLevel bit 1
_MAX_UP = 32  # levels walked up from a root given by node id, to find its browse path


@dataclass(frozen=True, slots=True)
class BrowsedVariable:
    """One variable found: how to name it in a config, what it holds now."""

    node_id: str  # ns=2;s=Line1.pump1.Temp
    path: str  # 0:Objects/2:Line1/2:pump1/2:Temp ("" when a name cannot be written as a path)
    names: tuple[str, ...]  # the browse names below the root, this one last
    data_type: str  # Double, Int16, Boolean, String, ... (a server's own type: its browse name)
    value: object  # the value read now (None with a bad status)
    status: str  # Good, or the status code's name
    writable: bool

    @property
    def numeric(self) -> bool:
        """Whether the connector can deliver it: a number or a bool (the snippet holds only these)."""
        return self.status == "Good" and number(self.value) is not None


@dataclass(slots=True)
class BrowseResult:
    """What a browse found, and where it stopped."""

    endpoint: str
    root: str  # the root's browse path (its node id when it has none)
    variables: list[BrowsedVariable] = field(default_factory=list)
    nodes: int = 0  # nodes visited below the root
    truncated: bool = False  # max_nodes reached: more nodes are left unvisited
    cut_at_depth: int = 0  # nodes at the depth limit whose children were not browsed
    standard_skipped: int = 0  # namespace-0 nodes passed over


@dataclass(frozen=True, slots=True)
class _Found:
    node: ua.NodeId
    path: tuple[tuple[int, str], ...]  # (namespace, browse name) from the Root folder
    below: tuple[str, ...]  # browse names below the browse root


async def browse_server(
    endpoint: str,
    who: Identity,
    *,
    root: str = "i=85",
    depth: int = 6,
    max_nodes: int = 2000,
    include_standard: bool = False,
    timeout_s: float = 5.0,
) -> BrowseResult:
    """Browse ``endpoint`` from ``root`` (a node id or a browse path; default the Objects folder).
    ConnectorError when the server cannot be reached, refuses the session, or has no such root."""
    async with open_session(endpoint, who, timeout_s) as client:
        try:
            return await _browse(client, endpoint, root, depth, max_nodes, include_standard)
        except (OSError, TimeoutError, UaError) as exc:
            raise ConnectorError(f"browsing {endpoint} failed: {describe(exc)}") from exc


async def _browse(
    client: Client, endpoint: str, root: str, depth: int, max_nodes: int, include_standard: bool
) -> BrowseResult:
    start = await _root(client, root)
    result = BrowseResult(endpoint, _path_text(start.path) or root)
    seen = {start.node}
    level = [start]
    found: list[_Found] = []
    for level_no in range(1, depth + 1):
        if not level or result.truncated:
            break
        children: list[_Found] = []
        for parent, refs in zip(level, await _children([f.node for f in level], client), strict=True):
            for ref in refs:
                node = ref.NodeId
                if node in seen:
                    continue
                seen.add(node)
                if node.NamespaceIndex == 0 and not include_standard:
                    result.standard_skipped += 1
                    continue
                if result.nodes >= max_nodes:
                    result.truncated = True
                    break
                result.nodes += 1
                name = ref.BrowseName
                child = _Found(
                    node,
                    (*parent.path, (name.NamespaceIndex, name.Name or "")),
                    (
                        *parent.below,
                        name.Name or "",
                    ),
                )
                if ref.NodeClass == ua.NodeClass.Variable:
                    found.append(child)
                children.append(child)
            if result.truncated:
                break
        if level_no == depth:
            result.cut_at_depth = len(children)
        level = children
    result.variables = await _describe_all(client, found)
    return result


async def _root(client: Client, root: str) -> _Found:
    parsed = parse_node(root)
    if isinstance(parsed, NodeIdSpec):
        node = ua.NodeId.from_string(root)
        path = await _path_of(client, node)
        return _Found(node, path, ())
    (result,) = await client.uaclient.translate_browsepaths_to_nodeids(
        [ua.BrowsePath(StartingNode=_ROOT, RelativePath=relative_path(parsed))]
    )
    if not result.StatusCode.is_good() or not result.Targets:
        raise ConnectorError(f"root {root!r} not found: {status_name(result.StatusCode)}")
    return _Found(result.Targets[0].TargetId, tuple(parsed), ())


async def _path_of(client: Client, node: ua.NodeId) -> tuple[tuple[int, str], ...]:
    """The browse path from the Root folder to ``node``, walking its inverse hierarchical references
    up; empty when the node has no way up to Root (or is Root). ConnectorError when it does not exist."""
    path: list[tuple[int, str]] = []
    here = node
    for _ in range(_MAX_UP):
        if here == _ROOT:
            return tuple(reversed(path))
        read = ua.ReadValueId(NodeId=here, AttributeId=AttributeIds.BrowseName)
        (name,) = await client.uaclient.read(ua.ReadParameters(NodesToRead=[read]))
        qualified = name.Value.Value if name.Value is not None else None
        if not _status(name).is_good() or not isinstance(qualified, ua.QualifiedName):
            if here == node:
                raise ConnectorError(f"root {node.to_string()!r} not found: {status_name(_status(name))}")
            return ()
        path.append((qualified.NamespaceIndex, qualified.Name or ""))
        (up,) = await _children([here], client, inverse=True)
        if not up:
            return ()
        here = up[0].NodeId
    return ()


def _status(dv: ua.DataValue) -> ua.StatusCode:
    return dv.StatusCode or ua.StatusCode()


async def _children(
    nodes: Sequence[ua.NodeId], client: Client, *, inverse: bool = False
) -> list[list[ua.ReferenceDescription]]:
    """The hierarchical references (HasProperty left out) of each node: objects and variables only."""
    out: list[list[ua.ReferenceDescription]] = []
    for at in range(0, len(nodes), _CHUNK):
        chunk = nodes[at : at + _CHUNK]
        params = ua.BrowseParameters(
            View=ua.ViewDescription(),
            RequestedMaxReferencesPerNode=0,
            NodesToBrowse=[
                ua.BrowseDescription(
                    NodeId=node,
                    BrowseDirection=ua.BrowseDirection.Inverse if inverse else ua.BrowseDirection.Forward,
                    ReferenceTypeId=HIERARCHICAL,
                    IncludeSubtypes=True,
                    NodeClassMask=ua.NodeClass.Object | ua.NodeClass.Variable,
                    ResultMask=ua.BrowseResultMask.All,
                )
                for node in chunk
            ],
        )
        for result in await client.uaclient.browse(params):
            refs = list(result.References or [])
            point = result.ContinuationPoint
            while point:
                (more,) = await client.uaclient.browse_next(
                    ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[point])
                )
                refs.extend(more.References or [])
                point = more.ContinuationPoint
            out.append([r for r in refs if r.ReferenceTypeId != _HAS_PROPERTY])
    return out


async def _describe_all(client: Client, found: list[_Found]) -> list[BrowsedVariable]:
    """DataType, Value and UserAccessLevel of every variable, in requests of ``_CHUNK`` variables."""
    attributes = (AttributeIds.DataType, AttributeIds.Value, AttributeIds.UserAccessLevel)
    values: list[ua.DataValue] = []
    for at in range(0, len(found), _CHUNK):
        reads = [
            ua.ReadValueId(NodeId=f.node, AttributeId=attribute)
            for f in found[at : at + _CHUNK]
            for attribute in attributes
        ]
        values.extend(await client.uaclient.read(ua.ReadParameters(NodesToRead=reads)))
    type_ids = [dv.Value.Value if dv.Value is not None else None for dv in values[0::3]]
    names = await _type_names(client, [t for t in type_ids if isinstance(t, ua.NodeId)])
    out = []
    for i, f in enumerate(found):
        type_id, dv, access = type_ids[i], values[3 * i + 1], values[3 * i + 2]
        good = _status(dv).is_good()
        level = access.Value.Value if access.Value is not None else 0
        out.append(
            BrowsedVariable(
                node_id=f.node.to_string(),
                path=_path_text(f.path),
                names=f.below,
                data_type=names.get(type_id, "?") if isinstance(type_id, ua.NodeId) else "?",
                value=dv.Value.Value if good and dv.Value is not None else None,
                status=status_name(_status(dv)),
                writable=bool(int(level or 0) & _CURRENT_WRITE),
            )
        )
    return out


async def _type_names(client: Client, types: list[ua.NodeId]) -> dict[ua.NodeId, str]:
    """Names of data types: the standard's from asyncua's table, a server's own by their browse name."""
    names: dict[ua.NodeId, str] = {}
    own: list[ua.NodeId] = []
    for t in dict.fromkeys(types):
        if t.NamespaceIndex == 0 and isinstance(t.Identifier, int) and t.Identifier in ObjectIdNames:
            names[t] = ObjectIdNames[t.Identifier]
        else:
            own.append(t)
    for at in range(0, len(own), _CHUNK):
        chunk = own[at : at + _CHUNK]
        reads = [ua.ReadValueId(NodeId=t, AttributeId=AttributeIds.BrowseName) for t in chunk]
        for t, dv in zip(
            chunk, await client.uaclient.read(ua.ReadParameters(NodesToRead=reads)), strict=True
        ):
            qualified = dv.Value.Value if dv.Value is not None else None
            names[t] = (
                qualified.Name
                if isinstance(qualified, ua.QualifiedName) and qualified.Name
                else t.to_string()
            )
    return names


def _path_text(path: Sequence[tuple[int, str]]) -> str:
    """``0:Objects/2:Line1``, or "" when a name holds ``/`` (or is empty): not writable as a path."""
    if not path or any(not name or "/" in name for _, name in path):
        return ""
    return "/".join(f"{ns}:{name}" for ns, name in path)
