"""Offload of hard optimisation subproblems to the data center (QUBO builders, wire format, solvers).

Empty until the hybrid-offload issue lands; ``hybrid`` never imports ``agent``.
"""
