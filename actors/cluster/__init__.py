"""Cluster mode: several procq nodes on one PostgreSQL (the store in actors/store/postgres.py).

Plain objects the Dispatcher drives from its own thread (or small threads of their own): the node's
registration and heartbeat with self-fencing (nodes.py), the claim of runnable jobs (claim.py), the
sweep that reruns or fails the jobs of lost nodes (sweep.py), NOTIFY hints with polling as the floor
(hints.py), cancels through any node (cancels.py) and finished output kept in the database (outputs.py).
"""
