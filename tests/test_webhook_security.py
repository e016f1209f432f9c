"""Signed webhooks verified by a real receiver, and the targets a delivery refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3

from procq.actors import netguard, webhook
from procq.server import values
from tests.helpers import ROOT, py, wait_until

SECRET = "whsec_" + base64.b64encode(b"a secret of 24 bytes!!!!").decode()


def verify(secret: str, headers: Any, body: bytes, tolerance_s: int = 300) -> bool:
    """What a receiver does (the README shows the same): recompute the signature over
    "<webhook-id>.<webhook-timestamp>.<body>", compare in constant time, reject stale timestamps."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance_s:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    return any(
        hmac.compare_digest(expected.decode(), sig.removeprefix("v1,"))
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )


def readme_receiver() -> dict[str, Any]:
    """The receiver the README shows, run as written (but for its last line, which would serve forever)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = text.split("### Verifying a signed webhook", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code.replace("HTTPServer((", "# HTTPServer(("), namespace)  # noqa: S102 - our own README
    return namespace


class VerifyingReceiver:
    """A real HTTP server that answers 204 to a correctly signed delivery and 401 to anything else."""

    def __init__(self, secret: str, verify: Any = None) -> None:
        check = verify or (lambda headers, body: globals()["verify"](secret, headers, body))
        self.verified: list[tuple[dict[str, str], bytes]] = []
        self.rejected = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = "webhook-signature" in self.headers and check(self.headers, body)
                if ok:
                    owner.verified.append((dict(self.headers), body))
                else:
                    owner.rejected += 1
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def delivery(server: Any, job_id: str, state: str) -> dict[str, Any]:
    """The job once its webhook delivery has reached `state`."""
    return wait_until(
        lambda: (j := server.status(job_id))["webhook_delivery"] and j["webhook_delivery"]["state"] == state and j
    )


@pytest.fixture
def verifying() -> Iterator[VerifyingReceiver]:
    receiver = VerifyingReceiver(SECRET)
    yield receiver
    receiver.close()


def test_signed_deliveries_verify_at_the_receiver(verifying: VerifyingReceiver, start_server: Any) -> None:
    server = start_server(env={"PROCQ_WEBHOOK_SECRET": SECRET})
    job = server.submit(py("pass"), webhook=verifying.url)
    delivered = delivery(server, job["id"], "delivered")
    assert delivered["webhook_delivery"]["attempts"] == 1 and verifying.rejected == 0
    headers, body = verifying.verified[0]
    assert headers["webhook-id"].startswith("msg_") and body.startswith(b"{")
    assert f'"id": "{job["id"]}"'.encode() in body


def test_a_receiver_with_another_secret_rejects_the_delivery(start_server: Any) -> None:
    receiver = VerifyingReceiver("whsec_" + base64.b64encode(b"some other secret").decode())
    try:
        server = start_server("--webhook-secret", SECRET, "--webhook-attempts", "1")
        job = server.submit(py("pass"), webhook=receiver.url)
        failed = delivery(server, job["id"], "failed")
        assert failed["webhook_delivery"]["last_error"] == "HTTP 401 from the receiver"
        assert receiver.rejected == 1 and receiver.verified == []
    finally:
        receiver.close()


def test_deny_private_refuses_a_loopback_receiver_and_records_why(
    verifying: VerifyingReceiver, start_server: Any
) -> None:
    server = start_server("--webhook-deny-private", "--webhook-attempts", "1")
    job = server.submit(py("pass"), webhook=verifying.url)
    failed = delivery(server, job["id"], "failed")
    assert "refused: 127.0.0.1 is a private, loopback or reserved address" in failed["webhook_delivery"]["last_error"]
    assert failed["status"] == "COMPLETED"  # a webhook never changes the job's outcome
    assert verifying.rejected == 0 and verifying.verified == []  # nothing reached it


@pytest.mark.parametrize(
    ("url", "deny_private", "refused"),
    [
        ("http://169.254.169.254/latest/meta-data/", False, "link-local"),
        ("http://[fe80::1]:8080/hook", False, "link-local"),
        ("http://[::ffff:169.254.169.254]/", False, "link-local"),
        ("http://10.1.2.3/hook", True, "private"),
        ("http://192.168.0.1/hook", True, "private"),
        ("http://[::1]/hook", True, "private"),
        ("http://127.0.0.1:9/hook", False, None),
        ("http://10.1.2.3/hook", False, None),
        ("http://93.184.215.14/hook", True, None),
    ],
)
def test_targets_are_checked_after_resolution(url: str, deny_private: bool, refused: str | None) -> None:
    # Literal addresses only: getaddrinfo resolves them without any traffic.
    reason = netguard.target_refusal(url, deny_private)
    assert (reason is None) if refused is None else (refused in reason)


def test_the_connect_time_check_refuses_before_connecting(verifying: VerifyingReceiver) -> None:
    # What stops DNS rebinding: the address actually connected to is checked again.
    pool = netguard.checked_pools(True)["http"]("127.0.0.1", int(verifying.url.split(":")[2].split("/")[0]))
    with pytest.raises(urllib3.exceptions.NewConnectionError, match="refused: 127.0.0.1"):
        pool._new_conn().connect()
    assert verifying.verified == [] and verifying.rejected == 0


def test_the_signature_matches_the_standard_webhooks_example() -> None:
    # The test vector of the Standard Webhooks reference libraries.
    secret = values.parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    headers = webhook.signature_headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_readme_receiver_verifies_a_real_delivery(start_server: Any) -> None:
    documented = readme_receiver()
    secret = "whsec_" + base64.b64encode(documented["SECRET"]).decode()
    receiver = VerifyingReceiver(secret, verify=documented["verified"])
    try:
        server = start_server(env={"PROCQ_WEBHOOK_SECRET": secret})
        job = server.submit(py("pass"), webhook=receiver.url)
        assert delivery(server, job["id"], "delivered")["webhook_delivery"]["attempts"] == 1
        headers, body = receiver.verified[0]
        forged = body.replace(b"COMPLETED", b"FAILED")
        assert not documented["verified"](headers, forged)  # a changed body fails the documented check
    finally:
        receiver.close()


def test_a_host_name_with_several_addresses_is_reached_on_the_one_that_answers(verifying: VerifyingReceiver) -> None:
    # localhost may resolve to ::1 first while the receiver listens on 127.0.0.1 only.
    url = verifying.url.replace("127.0.0.1", "localhost")
    assert webhook.send(url, b"{}", 5, secret=values.parse_secret(SECRET)) is None
    assert len(verifying.verified) == 1
