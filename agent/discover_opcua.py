"""``qxedge discover opcua://``: the variables of an OPC UA server and an ``opcua`` connector entry."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qxedge.agent.discover import access, checked_entry, emit_json, safe_name, snippet_yaml
from qxedge.connectors.opcua import BrowsedVariable, BrowseResult, browse_server

_SHOWN_VALUE = 40  # characters of a value in the listing


async def discover_opcua(endpoint: str, args: argparse.Namespace) -> int:
    try:
        who = access(args)
    except ValueError as exc:
        print(f"qxedge discover: error: {exc}", file=sys.stderr)
        return 2
    found = await browse_server(
        endpoint,
        who,
        root=args.root,
        depth=args.depth,
        max_nodes=args.max_nodes,
        include_standard=args.include_standard,
        timeout_s=args.timeout,
    )
    entry = snippet(found, who.security.model_dump(exclude_defaults=True, mode="json"), args)
    if args.json:
        emit_json(
            {
                "endpoint": found.endpoint,
                "root": found.root,
                "nodes": found.nodes,
                "truncated": found.truncated,
                "cut_at_depth": found.cut_at_depth,
                "standard_skipped": found.standard_skipped,
                "variables": [
                    {
                        "node_id": v.node_id,
                        "path": v.path,
                        "data_type": v.data_type,
                        "value": v.value,
                        "status": v.status,
                        "writable": v.writable,
                        "numeric": v.numeric,
                    }
                    for v in found.variables
                ],
                "snippet": entry,
            }
        )
        return 0
    print("\n".join(listing(found, args)))
    if entry is None:
        print("\nno numeric variable found: no snippet")
        return 0
    comments = [
        "config snippet (checked by qxedge's config model): the numeric variables above as readings;",
        "assets from the parent objects' names, signals from the variables' (rename at will)",
    ]
    if who.username is not None:
        comments.append("the password: password_file, or QXEDGE_CONNECTORS__<index>__OPCUA__PASSWORD")
    print()
    print(snippet_yaml(entry, comments), end="")
    return 0


def listing(found: BrowseResult, args: argparse.Namespace) -> list[str]:
    rows = [("node id", "browse path", "type", "access", "value")]
    for v in found.variables:
        rows.append((v.node_id, v.path or "-", v.data_type, "rw" if v.writable else "r", _value(v)))
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(4)]
    lines = [
        f"{found.endpoint}: {len(found.variables)} variable(s) below {found.root} "
        f"({found.nodes} node(s) visited, depth {args.depth})"
    ]
    lines += ["".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + row[4] for row in rows]
    if found.standard_skipped:
        lines.append(f"({found.standard_skipped} node(s) of namespace 0 passed over: --include-standard)")
    if found.cut_at_depth:
        lines.append(f"({found.cut_at_depth} node(s) at depth {args.depth} not browsed further: --depth)")
    if found.truncated:
        lines.append(f"(stopped at --max-nodes {args.max_nodes}: raise it, or start deeper with --root)")
    return lines


def _value(v: BrowsedVariable) -> str:
    if v.status != "Good":
        return f"({v.status})"
    text = str(v.value)
    return text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 3] + "..."


def snippet(found: BrowseResult, security: dict[str, Any], args: argparse.Namespace) -> dict[str, Any] | None:
    """An ``opcua`` entry reading every numeric variable found; None when there is none."""
    nodes: list[dict[str, str]] = []
    taken: set[tuple[str, str]] = set()
    for v in found.variables:
        if not v.numeric:
            continue
        asset, signal = names(v)
        base, n = signal, 1
        while (asset, signal) in taken:
            n += 1
            signal = f"{base}_{n}"
        taken.add((asset, signal))
        node = v.path if args.by_path and v.path else v.node_id
        nodes.append({"node": node, "asset": asset, "signal": signal})
    if not nodes:
        return None
    opcua: dict[str, Any] = {"endpoint": found.endpoint}
    if security:
        opcua["security"] = security
    if args.username is not None:
        opcua["username"] = args.username
    opcua["nodes"] = nodes
    return checked_entry({"opcua": opcua})


def names(v: BrowsedVariable) -> tuple[str, str]:
    """(asset, signal): the parents' browse names below the root as the asset's levels, the variable's
    own as the signal (``Line1/pump1/Temp`` → ``line1/pump1``, ``temp``); ``plant`` when it has none."""
    *parents, own = v.names or ("value",)
    return "/".join(safe_name(p) for p in parents) or "plant", safe_name(own)
