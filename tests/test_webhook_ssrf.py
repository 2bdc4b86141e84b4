"""Webhook destination URLs (docs/webhooks.md): URLs resolving to loopback, private, link-local and other
non-public addresses are refused unless private destinations are allowed; bad schemes, missing and unresolvable
hosts are refused always. No network is used: IP literals and ``localhost`` resolve locally, and the one case
that needs DNS answers is given them by a stub."""

import socket

import pytest

from webhooks import ssrf
from webhooks.ssrf import UnresolvableURL, UnsafeURL, check_url

NON_PUBLIC = [
    pytest.param("http://127.0.0.1/", "loopback", id="loopback"),
    pytest.param("http://127.0.0.1:6379/", "loopback", id="loopback-with-port"),
    pytest.param("http://localhost/hook", "loopback", id="localhost-name"),
    pytest.param("http://LOCALHOST/hook", "loopback", id="localhost-name-uppercase"),
    pytest.param("http://[::1]/", "loopback", id="ipv6-loopback"),
    pytest.param("http://[::ffff:127.0.0.1]/", "loopback", id="ipv4-mapped-ipv6-loopback"),
    pytest.param("http://[2002:7f00:1::]/", "loopback", id="6to4-loopback"),
    pytest.param("http://2130706433/", "loopback", id="decimal-loopback"),
    pytest.param("http://0177.0.0.1/", "loopback", id="octal-loopback"),
    pytest.param("http://0x7f.1/", "loopback", id="hex-short-loopback"),
    pytest.param("http://0.0.0.0/", "unspecified", id="unspecified"),
    pytest.param("http://[::]/", "unspecified", id="ipv6-unspecified"),
    pytest.param("http://10.0.0.1/", "private", id="10/8"),
    pytest.param("http://172.16.0.1/", "private", id="172.16/12"),
    pytest.param("https://192.168.1.1/", "private", id="192.168/16"),
    pytest.param("http://[::ffff:10.0.0.1]/", "private", id="ipv4-mapped-ipv6-private"),
    pytest.param("http://[fd00::1]/", "private", id="ipv6-unique-local"),
    pytest.param("http://169.254.169.254/latest/meta-data/", "link-local", id="cloud-metadata"),
    pytest.param("http://[fe80::1]/", "link-local", id="ipv6-link-local"),
    pytest.param("http://224.0.0.1/", "multicast", id="multicast"),
    pytest.param("http://[ff02::1]/", "multicast", id="ipv6-multicast"),
    pytest.param("http://240.0.0.1/", "reserved", id="reserved"),
    pytest.param("http://255.255.255.255/", "reserved", id="broadcast"),
    pytest.param("http://[64:ff9b::7f00:1]/", "reserved", id="nat64-loopback"),
    pytest.param("http://100.64.0.1/", "non-global", id="carrier-grade-nat"),
]

PUBLIC = [
    pytest.param("http://93.184.216.34/", id="ipv4"),
    pytest.param("https://93.184.216.34:8443/hooks?x=1", id="ipv4-https-port-query"),
    pytest.param("http://[2606:2800:220:1:248:1893:25c8:1946]/", id="ipv6"),
    pytest.param("http://[::ffff:93.184.216.34]/", id="ipv4-mapped-ipv6"),
    pytest.param("http://1572395042/", id="decimal-ipv4"),
]


@pytest.mark.parametrize(("url", "reason"), NON_PUBLIC)
def test_it_refuses_a_non_public_destination_naming_the_address_and_why(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL) as refused:
        check_url(url, allow_private=False)

    assert refused.value.reason == reason
    assert refused.value.address
    message = str(refused.value)
    assert url in message
    assert refused.value.address in message
    assert f" {reason} address" in message
    assert "ER_WEBHOOK_ALLOW_PRIVATE" in message


@pytest.mark.parametrize(("url", "reason"), NON_PUBLIC)
def test_it_accepts_a_non_public_destination_when_private_ones_are_allowed(url: str, reason: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize("url", PUBLIC)
@pytest.mark.parametrize("allow_private", [False, True])
def test_it_accepts_a_public_destination(url: str, allow_private: bool) -> None:
    check_url(url, allow_private=allow_private)


def test_the_refusal_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1, a loopback address"):
        check_url("http://127.0.0.1/", allow_private=False)


def test_it_names_the_host_and_what_it_resolved_to() -> None:
    with pytest.raises(UnsafeURL, match=r"host 'localhost' resolves to 127\.0\.0\.1, a loopback address") as refused:
        check_url("http://localhost:8000/hook", allow_private=False)

    assert refused.value.host == "localhost"
    assert refused.value.address == "127.0.0.1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("ftp://example.com/", r"has scheme 'ftp'; only http and https are allowed", id="ftp"),
        pytest.param("file:///etc/passwd", r"has scheme 'file'", id="file"),
        pytest.param("gopher://127.0.0.1:6379/_INFO", r"has scheme 'gopher'", id="gopher"),
        pytest.param("example.com/hook", r"has scheme ''", id="no-scheme"),
        pytest.param("http:///nohost", r"has no host", id="no-host"),
        pytest.param("http://:8080/", r"has no host", id="port-but-no-host"),
        pytest.param("http://[::1/", r"is malformed", id="unclosed-bracket"),
        pytest.param("http://93.184.216.34:99999/", r"is malformed", id="port-out-of-range"),
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_it_refuses_a_url_that_is_not_http_to_a_host_whatever_the_setting(
    url: str, message: str, allow_private: bool
) -> None:
    with pytest.raises(UnsafeURL, match=message):
        check_url(url, allow_private=allow_private)


@pytest.mark.parametrize("allow_private", [False, True])
def test_it_refuses_a_host_that_does_not_resolve(allow_private: bool) -> None:
    with pytest.raises(UnresolvableURL, match=r"cannot resolve host 'no-such-host\.invalid'") as refused:
        check_url("http://no-such-host.invalid/", allow_private=allow_private)

    assert isinstance(refused.value, UnsafeURL)
    assert refused.value.reason == "unresolvable"


def test_it_refuses_a_name_with_one_public_and_one_private_address(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        assert (host, port) == ("mixed.example", 443)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:10.1.2.3", port, 0, 0)),
        ]

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", resolve)

    with pytest.raises(UnsafeURL, match=r"resolves to ::ffff:10\.1\.2\.3, a private address"):
        check_url("https://mixed.example/", allow_private=False)
    check_url("https://mixed.example/", allow_private=True)


def test_it_does_not_repeat_a_password_from_the_url() -> None:
    with pytest.raises(UnsafeURL) as refused:
        check_url("http://user:s3cret@127.0.0.1/", allow_private=False)

    assert "s3cret" not in str(refused.value)
    assert "s3cret" not in refused.value.url
    assert "http://user:***@127.0.0.1/" in str(refused.value)
