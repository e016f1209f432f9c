"""The completion webhook: its payload, one delivery attempt, and the backoff between attempts."""

from __future__ import annotations

import json
from dataclasses import dataclass

import requests

from actors.job import Job


@dataclass(frozen=True)
class WebhookPolicy:
    """How hard we try: `max_attempts` deliveries, waiting base * 2**(n-1) seconds (at most cap) after
    failure n. The defaults retry for about four minutes before giving up."""

    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    timeout_s: float = 10.0

    def delay_after(self, failures: int) -> float:
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** (failures - 1))


def payload(job: Job) -> bytes:
    body = {"id": job.id, "status": job.status.value, "result_url": f"/jobs/{job.id}/result"}
    return json.dumps(body).encode("utf-8")


def send(url: str, body: bytes, timeout_s: float) -> str | None:
    """POST one delivery. Blocks up to timeout_s; returns None on a 2xx, else the error in words."""
    with requests.Session() as session:
        # Deliberate: no proxy from the environment (Windows system proxies could divert callbacks),
        # and no redirects: a receiver must answer at the URL the client gave.
        session.trust_env = False
        try:
            response = session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", "User-Agent": "procq-webhook"},
                timeout=timeout_s,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code} from the receiver"
