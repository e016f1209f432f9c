"""Whom a cluster node relays a job's result and logs to: only an address a node announced that is a
plain http://host:port, never a wildcard, link-local or cloud metadata address; and which requests
the node secret lets in."""

from __future__ import annotations

import falcon.testing
import pytest

from procq.api.relay import HEADER, ThisNode, base_url, is_relayed


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
        ("http://10.0.0.7:8080", "http://10.0.0.7:8080"),
        ("http://gpu-1.internal:8080", "http://gpu-1.internal:8080"),
        ("http://0.0.0.0:8080", None),  # a wildcard bind: not an address to connect to
        ("http://[::]:8080", None),
        ("http://169.254.169.254:80", None),  # cloud metadata
        ("http://[::ffff:169.254.169.254]:80", None),
        ("https://127.0.0.1:8080", None),
        ("http://127.0.0.1", None),  # no port
        ("http://127.0.0.1:8080/elsewhere", None),
        ("http://127.0.0.1:8080?x=1", None),
        ("http://user@127.0.0.1:99999", None),
        ("", None),
        (None, None),
    ],
)
def test_only_a_plain_announced_address_is_relayed_to(address: str | None, expected: str | None) -> None:
    assert base_url(address) == expected


def _request(method: str, path: str, secret: str | None) -> falcon.Request:
    headers = {HEADER: secret} if secret is not None else {}
    return falcon.Request(falcon.testing.create_environ(path=path, method=method, headers=headers))


@pytest.mark.parametrize(
    ("method", "path", "secret", "let_in"),
    [
        ("GET", "/jobs/abc_DEF-1/logs", "s3cret", True),
        ("GET", "/jobs/abc/result", "s3cret", True),
        ("GET", "/jobs/abc/logs", "guess", False),
        ("GET", "/jobs/abc/logs", None, False),
        ("PUT", "/jobs/abc/cancel", "s3cret", False),  # the secret reads output, nothing else
        ("DELETE", "/jobs/abc/logs", "s3cret", False),
        ("GET", "/jobs", "s3cret", False),
        ("GET", "/admin/keys", "s3cret", False),
        ("GET", "/jobs/abc/status", "s3cret", False),
        ("GET", "/jobs/a/b/logs", "s3cret", False),
    ],
)
def test_the_node_secret_lets_in_only_reads_of_a_jobs_result_and_logs(
    method: str, path: str, secret: str | None, let_in: bool
) -> None:
    assert is_relayed(_request(method, path, secret), ThisNode("n1", "s3cret")) is let_in
    assert not is_relayed(_request(method, path, secret), None)  # a single machine takes no relays
