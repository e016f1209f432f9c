"""The keeper: one long-lived process per jobs directory, the OS parent of every job process.

The server starts it when none runs (detached, so it outlives the server) and talks to it over a local
channel (`protocol.py`). It spawns job processes with the output files the server names, reaps them all
with one reaper, writes each attempt's spawn intent (`jobs/<id>/spawn.json`) before its process exists
and its exit record (`jobs/<id>/exit.json`) before telling anyone, and ends whole process trees on
request. It keeps running while the server is down, so a crash or an upgrade of the server does not
cut jobs short. Keepers of two protocol versions can run side by side during an upgrade: the other
one drains (retiring.py; the stable minimal protocol every version keeps is in protocol.py).

Small on purpose: the standard library, plus psutil through `procq.actors.osdeps` (every OS-specific
call lives there). No HTTP, no pykka, no secrets: it never sees API keys or webhook secrets.
"""
