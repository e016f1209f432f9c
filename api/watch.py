"""The routes for finding and watching jobs and the server, added to the app in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon
from procq.actors.events import EventHub
from procq.actors.metrics import Metrics
from procq.api.events import EventsResource
from procq.api.listing import JobResource
from procq.api.logs import LogsResource
from procq.api.openapi import OpenAPIResource
from procq.api.sse import StreamSlots
from procq.api.stats import MetricsResource, StatsResource


def add_routes(
    app: falcon.App, dispatcher: Any, jobs_dir: Path, events: EventHub, metrics: Metrics, max_streams: int
) -> None:
    """DELETE /jobs/{id}, GET /jobs/{id}/logs, /events, /stats, /metrics, /openapi.json.
    (GET /jobs is JobsResource.on_get, as /jobs is its route.)"""
    slots = StreamSlots(max_streams)  # shared by log followers and /events subscribers
    app.add_route("/jobs/{job_id}", JobResource(dispatcher))
    app.add_route("/jobs/{job_id}/logs", LogsResource(dispatcher, jobs_dir, events, slots))
    app.add_route("/events", EventsResource(events, slots))
    app.add_route("/stats", StatsResource(dispatcher, metrics))
    app.add_route("/metrics", MetricsResource(dispatcher, metrics))
    app.add_route("/openapi.json", OpenAPIResource())
