"""The webhook address guard, called directly: no name is resolved and no connection is made here."""

from __future__ import annotations

import socket

import pytest

from procq.actors import netguard

# (address, refused without --webhook-deny-private, refused with it)
FORMS = [
    ("169.254.169.254", True, True),
    ("fe80::1%eth0", True, True),
    ("fd00:ec2::254", True, True),  # AWS metadata over IPv6
    ("100.100.100.200", True, True),  # Alibaba metadata
    ("::ffff:169.254.169.254", True, True),  # IPv4-mapped
    ("::a9fe:a9fe", True, True),  # IPv4-compatible
    ("64:ff9b::a9fe:a9fe", True, True),  # NAT64
    ("64:ff9b::169.254.169.254", True, True),
    ("2002:a9fe:a9fe::1", True, True),  # 6to4
    ("2001:0:4136:e378:8000:63bf:5601:5601", True, True),  # Teredo, client 169.254.169.254 (obfuscated)
    ("127.0.0.1", False, True),
    ("::1", False, True),
    ("::ffff:127.0.0.1", False, True),
    ("::127.0.0.1", False, True),
    ("64:ff9b::7f00:1", False, True),
    ("2002:7f00:1::", False, True),
    ("64:ff9b::a00:1", False, True),  # NAT64 of 10.0.0.1
    ("2002:c0a8:101::", False, True),  # 6to4 of 192.168.1.1
    ("2001:0:4136:e378:8000:63bf:3f57:fefe", False, True),  # Teredo
    ("64:ff9b:1::a00:1", False, True),  # local-use NAT64
    ("10.1.2.3", False, True),
    ("fd12:3456::1", False, True),
    ("0.0.0.0", False, True),
    ("::", False, True),
    ("224.0.0.1", False, True),
    ("1.1.1.1", False, False),
    ("2606:4700::1111", False, False),
    ("64:ff9b::101:101", False, False),  # NAT64 of 1.1.1.1: a public address
    ("2002:101:101::1", False, False),  # 6to4 of 1.1.1.1
]


@pytest.mark.parametrize(("address", "always", "private"), FORMS)
def test_every_address_form_reaching_a_refused_range_is_refused(address: str, always: bool, private: bool) -> None:
    assert (netguard.address_refusal(address, deny_private=False) is not None) == always
    assert (netguard.address_refusal(address, deny_private=True) is not None) == private


@pytest.mark.parametrize(
    "host", ["a\x00b.example", "a\tb.example", "a b.example", "a\x7fb.example", "a\x85b.example", "a%00b.example"]
)
def test_a_host_with_control_characters_is_refused_without_asking_a_resolver(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"resolved {args[0]!r}")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    assert netguard.host_refusal(host) is not None
    assert "control characters" in (netguard.target_refusal(f"http://{host}/hook", deny_private=False) or "")


def test_plain_hosts_and_ipv6_literals_with_a_zone_pass_the_host_check() -> None:
    for host in ("hooks.example.com", "127.0.0.1", "::1", "fe80::1%eth0", "xn--bcher-kva.example"):
        assert netguard.host_refusal(host) is None, host
