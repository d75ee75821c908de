"""Webhook URL policy: which URLs are refused at registration and at delivery."""

from __future__ import annotations

import socket

import pytest

from tests.fakes.webhook_receivers import resolver_for
from threadgate.domain.errors import InvalidRequest
from threadgate.webhooks import AddressNotAllowed, UnresolvableHost, check_webhook_url, resolve_safe


PUBLIC = resolver_for({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})


def refused(url: str, *, allow_private: bool, resolver=PUBLIC) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check_webhook_url(url, allow_private=allow_private, resolver=resolver)
    assert caught.value.param == "webhook_url"
    return caught.value


def test_public_https_url_is_accepted():
    check_webhook_url("https://hooks.example.com/tools/lookup?x=1", allow_private=False, resolver=PUBLIC)
    check_webhook_url("https://93.184.216.34:8443/t", allow_private=False)  # IP literal: no lookup at all


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://127.1.2.3/hook",
        "https://10.0.0.1/hook",
        "https://172.16.5.4/hook",
        "https://192.168.1.1/hook",
        "https://100.64.0.1/hook",  # shared / CGNAT
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped private
        "https://[::ffff:127.0.0.1]/hook",
        "https://[2002:a00:1::]/hook",  # 6to4 wrapping 10.0.0.1
        "https://[64:ff9b::a00:1]/hook",  # NAT64 wrapping 10.0.0.1
        "https://[fd12:3456::1]/hook",  # unique local
        "https://[fec0::1]/hook",  # site local
    ],
)
def test_loopback_and_private_addresses_are_refused_unless_allowed(url):
    error = refused(url, allow_private=False)
    assert isinstance(error, AddressNotAllowed)
    check_webhook_url(url.replace("https://", "http://"), allow_private=True)  # a self-hosted receiver


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata: instance credentials
        "https://169.254.1.1/hook",
        "https://[fe80::1]/hook",
        "https://[fd00:ec2::254]/hook",  # AWS metadata over IPv6 (inside the unique-local range)
        "https://100.100.100.200/hook",  # Alibaba metadata (inside the shared range)
        "https://[::ffff:169.254.169.254]/hook",
        "https://0.0.0.0/hook",  # reaches the local host on Linux
        "https://0.1.2.3/hook",
        "https://[::]/hook",
        "https://224.0.0.1/hook",  # multicast
        "https://[ff02::1]/hook",
        "https://255.255.255.255/hook",
        "https://240.0.0.1/hook",  # reserved
        "https://192.0.2.10/hook",  # documentation
    ],
)
def test_metadata_link_local_multicast_and_reserved_are_refused_even_when_private_is_allowed(url):
    assert isinstance(refused(url, allow_private=False), AddressNotAllowed)
    assert isinstance(refused(url, allow_private=True), AddressNotAllowed)


def test_a_hostname_resolving_to_a_private_address_is_refused():
    evil = resolver_for({"evil.example": ["10.0.0.1"]})
    assert isinstance(refused("https://evil.example/hook", allow_private=False, resolver=evil), AddressNotAllowed)
    check_webhook_url("https://evil.example/hook", allow_private=True, resolver=evil)


def test_one_bad_address_among_several_refuses_the_host():
    mixed = resolver_for({"mixed.example": ["93.184.216.34", "169.254.169.254"]})
    refused("https://mixed.example/hook", allow_private=True, resolver=mixed)


def test_numeric_host_tricks_are_judged_by_what_they_resolve_to():
    # The real resolver turns "2130706433" and "0x7f.1" into 127.0.0.1 (inet_aton forms).
    refused("https://2130706433/hook", allow_private=False, resolver=socket.getaddrinfo)
    refused("https://0x7f.1/hook", allow_private=False, resolver=socket.getaddrinfo)


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://hooks.example.com/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://hooks.example.com/", "http or https"),
        ("hooks.example.com/hook", "http or https"),
        ("https:///nohost", "no host"),
        ("https://user:pw@hooks.example.com/hook", "credentials"),
        ("https://hooks.example.com:99999/hook", "port"),
        ("https://hooks.example.com/ho ok", "spaces"),
        ("https://hooks.example.com/" + "a" * 3000, "2048"),
    ],
)
def test_malformed_urls_are_refused_with_a_message_naming_the_problem(url, message):
    for allow_private in (False, True):
        assert message in refused(url, allow_private=allow_private).message


def test_plain_http_is_refused_unless_private_webhooks_are_allowed():
    assert "https" in refused("http://hooks.example.com/hook", allow_private=False).message
    check_webhook_url("http://hooks.example.com/hook", allow_private=True, resolver=PUBLIC)


def test_an_unresolvable_host_is_refused_at_registration():
    error = refused("https://nowhere.invalid/hook", allow_private=True)
    assert isinstance(error, UnresolvableHost)


def test_resolve_safe_returns_the_vetted_addresses_once_each_in_order():
    doubled = resolver_for({"hooks.example.com": ["93.184.216.34", "93.184.216.34", "2606:2800:220:1::1"]})
    assert resolve_safe("hooks.example.com", 443, allow_private=False, resolver=doubled) == [
        "93.184.216.34",
        "2606:2800:220:1::1",
    ]
    assert resolve_safe("::1", 80, allow_private=True) == ["::1"]
    with pytest.raises(AddressNotAllowed):
        resolve_safe("evil.example", 443, allow_private=False, resolver=resolver_for({"evil.example": ["10.0.0.1"]}))


def test_international_names_are_resolved_in_their_idna_form():
    idna = resolver_for({"xn--bcher-kva.example": ["93.184.216.34"]})
    check_webhook_url("https://bücher.example/hook", allow_private=False, resolver=idna)


# Every IPv6 spelling that carries an IPv4 address: judged by the IPv4 address it reaches, or
# refused outright when that address cannot be told or no receiver uses the form.
# (address, verdict without allow_private, verdict with allow_private)
IPV4_IN_IPV6 = [
    ("::127.0.0.1", "refused", "refused"),  # IPv4-compatible (deprecated): Python calls it global
    ("::7f00:1", "refused", "refused"),  # the same, in hex
    ("::10.0.0.1", "refused", "refused"),
    ("::169.254.169.254", "refused", "refused"),
    ("::8.8.8.8", "refused", "refused"),
    ("::ffff:127.0.0.1", "refused", "allowed"),  # IPv4-mapped: it is 127.0.0.1
    ("::ffff:7f00:1", "refused", "allowed"),
    ("::ffff:10.1.2.3", "refused", "allowed"),
    ("::ffff:169.254.169.254", "refused", "refused"),
    ("::ffff:8.8.8.8", "allowed", "allowed"),
    ("::ffff:0:127.0.0.1", "refused", "refused"),  # IPv4-translated (SIIT)
    ("::ffff:0:8.8.8.8", "refused", "refused"),
    ("2002:7f00:1::1", "refused", "allowed"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", "refused", "refused"),  # 6to4 of the metadata address
    ("2002:c0a8:101::1", "refused", "allowed"),  # 6to4 of 192.168.1.1
    ("2002:808:808::1", "allowed", "allowed"),  # 6to4 of 8.8.8.8
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "refused", "refused"),  # Teredo (client 127.0.0.1)
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "refused", "refused"),  # Teredo (client 8.8.8.8)
    ("64:ff9b::7f00:1", "refused", "allowed"),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "refused", "refused"),  # NAT64 of the metadata address
    ("64:ff9b::a00:1", "refused", "allowed"),  # NAT64 of 10.0.0.1
    ("64:ff9b::808:808", "allowed", "allowed"),  # NAT64 of 8.8.8.8
    ("64:ff9b:1::7f00:1", "refused", "refused"),  # local-use NAT64: where the IPv4 sits is the operator's choice
    ("64:ff9b:1:7f00:1::", "refused", "refused"),
    ("::1", "refused", "allowed"),  # plain loopback, unchanged
    ("::", "refused", "refused"),
]


@pytest.mark.parametrize("address,public_policy,private_policy", IPV4_IN_IPV6, ids=[a for a, _, _ in IPV4_IN_IPV6])
def test_ipv6_forms_carrying_ipv4_are_judged_by_where_they_lead(address, public_policy, private_policy):
    url = f"https://[{address}]/hook"
    for allow_private, verdict in ((False, public_policy), (True, private_policy)):
        if verdict == "allowed":
            check_webhook_url(url, allow_private=allow_private, resolver=PUBLIC)
        else:
            assert isinstance(refused(url, allow_private=allow_private), AddressNotAllowed), (address, allow_private)
