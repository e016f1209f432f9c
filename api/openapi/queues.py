"""OpenAPI paths for controlling what runs: the named queues, the GPUs and counted resources jobs require,
and the nodes of a cluster."""

from __future__ import annotations

from typing import Any

from procq.api.openapi.parts import body, error, json_reply, operation, path_param

PATHS: dict[str, Any] = {
    "/queues": {
        "get": operation(
            "Every queue with its parallelism, pause state and counts",
            {"200": json_reply("The queues.", "QueueList")},
        )
    },
    "/queues/{name}": {
        "put": operation(
            "Pause, resume or resize a queue (creating it if new); running jobs go on",
            {"200": json_reply("The queue.", "Queue"), "400": error("A bad name or body.")},
            parameters=[path_param("name")],
            requestBody=body("QueueUpdate"),
        )
    },
    "/resources": {
        "get": operation(
            "The server's GPUs (with the job on each) and counted resources (total, in use, free)",
            {"200": json_reply("The resources.", "Resources")},
        )
    },
    "/nodes": {
        "get": operation(
            "Cluster mode: every node's name, address, slots, running jobs and last heartbeat",
            {
                "200": json_reply("The nodes.", "NodeList"),
                "404": error("This server runs on one machine (no --database-url): it has no nodes."),
            },
        )
    },
}
