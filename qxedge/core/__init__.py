"""The bottom layer: what every other qxedge package shares and nothing protocol-specific.

- ``errors``: the one exception root (``QxError``) and its tree;
- ``backoff``: the one jittered exponential backoff of every reconnect loop;
- ``config``: helpers of config models (relative paths, password files, service URLs without passwords);
- ``lazy``: package exports imported on first use (a config loads no driver);
- ``state``: where a process keeps its state on disk;
- ``cancels``: the cancel check around blocking awaits;
- ``ops_server``: the ``/metrics``, ``/healthz`` and ``/readyz`` endpoint of a long-running process.

It imports no other qxedge package.
"""
