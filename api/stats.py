"""GET /stats (counts, worker slots, one-minute rates) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from procq.actors.metrics import Metrics
from procq.api.ask import ask
from procq.api.auth import owner_filter

if TYPE_CHECKING:
    from procq.actors.dispatch.dispatcher import DispatcherProxy


class StatsResource:
    def __init__(self, dispatcher: DispatcherProxy, metrics: Metrics) -> None:
        self._dispatcher = dispatcher
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # A key without admin sees counts of its own jobs, as its listings do.
        stats = ask(self._dispatcher.stats(owner_filter(req)))
        submitted, completed = self._metrics.rates()
        resp.media = {
            **stats,
            "submitted_per_s": round(submitted, 4),
            "completed_per_s": round(completed, 4),
            "history": self._metrics.history(),  # lets a page draw the last minutes at once
        }


class MetricsResource:
    """The state gauges are set from the Dispatcher's answer at each scrape, so they never drift."""

    def __init__(self, dispatcher: DispatcherProxy, metrics: Metrics) -> None:
        self._dispatcher = dispatcher
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        stats = ask(self._dispatcher.stats())
        self._metrics.set_state(stats["counts"], stats["workers"]["busy"], stats["workers"]["total"])
        self._metrics.set_resources(stats["resources"])
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._metrics.registry)
