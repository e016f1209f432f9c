"""Sending webhooks: the completion payload, one signed delivery attempt (when to retry is dispatch/deliveries.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import requests

from procq.actors import deadline
from procq.actors.job import Job
from procq.actors.netguard import checked_pools, target_refusal

SendWebhook = Callable[[str, bytes, float], "str | None"]  # (url, body, timeout_s) -> error or None


def payload(job: Job) -> bytes:
    body = {
        "id": job.id,
        "status": job.status.value,
        "result_url": f"/jobs/{job.id}/result",  # sent for every state, as the contract fixes: 409 unless COMPLETED
        "status_url": f"/jobs/{job.id}",  # the whole job: exit code, error, runs
    }
    return json.dumps(body).encode("utf-8")


def send(
    url: str,
    body: bytes,
    timeout_s: float,
    secret: bytes | None = None,
    deny_private: bool = False,
    now: Callable[[], float] = time.time,
) -> str | None:
    """POST one delivery. Blocks up to timeout_s in all (connect, send, the whole answer); returns
    None on a 2xx, else the error in words.
    With `secret`, the delivery is signed (Standard Webhooks). Link-local targets are always refused,
    private and loopback ones too with `deny_private`; a refusal is returned as the error."""
    refusal = target_refusal(url, deny_private)
    if refusal is not None:
        return refusal
    headers = {"Content-Type": "application/json", "User-Agent": "procq-webhook"}
    if secret is not None:
        headers.update(signature_headers(secret, message_id(body), int(now()), body))
    with requests.Session() as session:
        # Deliberate: no proxy from the environment (Windows system proxies could divert callbacks),
        # and no redirects: a receiver must answer at the URL the client gave.
        session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(max_retries=0)
        adapter.poolmanager.pool_classes_by_scheme = checked_pools(deny_private)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with deadline.bounded(timeout_s) as bound:  # timeout_s alone would bound each read, not the whole
            try:
                response = session.post(url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False)
            except requests.RequestException as exc:
                if bound.expired:
                    return f"no complete answer within the {timeout_s:g} s deadline (connect, send and response)"
                return f"{type(exc).__name__}: {exc}"
        if bound.expired:
            return f"no complete answer within the {timeout_s:g} s deadline (connect, send and response)"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code} from the receiver"


# --- signing (https://www.standardwebhooks.com) ---------------------------------------------------


def message_id(body: bytes) -> str:
    # The same for every retry of one delivery (receivers deduplicate on it) and different for any
    # other message: the body names the job and the state it reached.
    return "msg_" + hashlib.sha256(body).hexdigest()[:32]


def signature_headers(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature ("v1,<base64 HMAC-SHA256 of id.timestamp.body>")."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode("ascii")
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{signature}"}
