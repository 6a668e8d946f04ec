"""The bottom layer: what every other qxedge package shares and nothing protocol-specific.

- ``errors``: the one exception root (``QxError``) and its tree;
- ``state``: where a process keeps its state on disk;
- ``cancels``: the cancel check around blocking awaits;
- ``ops_server``: the ``/metrics``, ``/healthz`` and ``/readyz`` endpoint of a long-running process.

It imports no other qxedge package.
"""
