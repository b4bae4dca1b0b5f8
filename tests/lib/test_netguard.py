"""The SSRF guard: refuses non-public hosts before the request, on redirects and
after connecting, unless ``ckan.harvest.ssrf_allowed_hosts`` allows them.

Real sockets: a small HTTP server on 127.0.0.1 answers (or redirects); numeric
addresses are "resolved" without any DNS traffic.
"""
from __future__ import annotations

import ipaddress
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import requests

from ckanext.harvest.lib import netguard
from ckanext.harvest.lib.netguard import HostNotAllowed, check_url, new_session

KEY = netguard.CONFIG_KEY

pytestmark = [
    pytest.mark.ckan_config("ckan.plugins", "harvest"),
    pytest.mark.usefixtures("with_plugins"),
]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
        body = b'{"success": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:{}".format(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.ckan_config(KEY, "")  # test-core.ini allows loopback
@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.1.2.3:8983/solr/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://localhost:6379/", "loopback"),
        ("http://10.0.0.5/", "private"),
        ("http://172.16.3.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local (metadata service)"),
        ("http://[fe80::1]/", "link-local (metadata service)"),
        ("http://100.100.100.200/", "non-public"),  # shared address space
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:10.1.1.1]/", "private"),
        ("https://2130706433/", "loopback"),  # 127.0.0.1 written as one number
    ],
)
def test_non_public_addresses_are_refused(url: str, kind: str) -> None:
    with pytest.raises(HostNotAllowed) as error:
        check_url(url)
    message = str(error.value)
    assert message.startswith("Refusing to fetch {}: ".format(url))
    assert "is a {} address".format(kind) in message
    assert KEY in message


@pytest.mark.ckan_config(KEY, "")  # test-core.ini allows loopback
@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/", "gopher://127.0.0.1:6379/",
            "dict://127.0.0.1:11211/", "//example.org/", "http:///path"],
)
def test_other_schemes_and_hostless_urls_are_refused(url: str) -> None:
    with pytest.raises(HostNotAllowed, match="^Refusing to fetch"):
        check_url(url)


@pytest.mark.parametrize("url", ["http://93.184.216.34/", "https://[2606:4700::1]/"])
def test_public_addresses_are_allowed(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    "allowed",
    ["127.0.0.1", "127.0.0.0/8", "localhost 127.0.0.1", "*", "other.example 127.0.0.1/32"],
)
def test_the_allow_list_lets_loopback_through(allowed: str, server: str,
                                              ckan_config: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ckan_config, KEY, allowed)
    assert new_session().get(server + "/", timeout=5).json() == {"success": True}


@pytest.mark.ckan_config(KEY, "localhost")
def test_an_allowed_name_does_not_allow_its_address() -> None:
    check_url("http://LOCALHOST.:5000/")  # names compare case-insensitively
    with pytest.raises(HostNotAllowed, match="127.0.0.1 is a loopback address"):
        check_url("http://127.0.0.1:5000/")


@pytest.mark.ckan_config(KEY, ".intranet.example")
def test_a_leading_dot_allows_a_whole_domain() -> None:
    check_url("http://catalogue.intranet.example/")
    check_url("http://a.b.intranet.example./")
    with pytest.raises(requests.exceptions.ConnectionError):
        check_url("http://intranet.example.evil.invalid/")  # not under the domain


@pytest.mark.ckan_config(KEY, "10.0.0.0/8")
def test_a_network_allows_only_its_addresses() -> None:
    check_url("http://10.200.0.1/")
    with pytest.raises(HostNotAllowed):
        check_url("http://192.168.0.1/")


@pytest.mark.ckan_config(KEY, "")
def test_a_session_refuses_before_sending_anything(server: str) -> None:
    with pytest.raises(HostNotAllowed, match="127.0.0.1 is a loopback address"):
        new_session().get(server + "/", timeout=5)


@pytest.mark.ckan_config(KEY, "127.0.0.1")
def test_each_redirect_is_checked(server: str) -> None:
    # 127.0.0.1 is allowed, the redirect target 127.0.0.2 (loopback too) is not.
    target = "http://127.0.0.2:1/secret"
    with pytest.raises(HostNotAllowed) as error:
        new_session().get(server + "/redirect?to=" + target, timeout=5)
    assert str(error.value).startswith("Refusing to fetch {}: ".format(target))
    # An allowed redirect target is followed.
    answer = new_session().get(server + "/redirect?to=" + server + "/ok", timeout=5)
    assert answer.json() == {"success": True}
    assert [r.status_code for r in answer.history] == [302]


@pytest.mark.ckan_config(KEY, "")
def test_the_connected_address_is_checked(server: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name looked public when checked, the connection is not."""
    monkeypatch.setattr(netguard, "_resolve",
                        lambda host, port: [ipaddress.ip_address("93.184.216.34")])
    with pytest.raises(HostNotAllowed) as error:
        new_session().get(server + "/", timeout=5)
    assert "127.0.0.1 is a loopback address" in str(error.value)
    assert str(error.value).startswith("Refusing to fetch {}/: ".format(server))


@pytest.mark.ckan_config(KEY, "")
def test_refusals_are_request_errors_and_not_retried(server: str,
                                                     monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    from urllib3.util.retry import Retry

    monkeypatch.setattr(netguard, "_resolve",
                        lambda host, port: [ipaddress.ip_address("93.184.216.34")])
    session = new_session(max_retries=Retry(total=3, connect=3, backoff_factor=0))
    with pytest.raises(requests.RequestException) as error:
        session.get(server + "/", timeout=5)
    assert isinstance(error.value, HostNotAllowed)


@pytest.mark.ckan_config(KEY, "")  # test-core.ini allows loopback
def test_an_unresolvable_host_is_a_clear_connection_error() -> None:
    with pytest.raises(requests.exceptions.ConnectionError, match="Cannot resolve host"):
        check_url("http://no-such-host.invalid/")
