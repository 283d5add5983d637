"""Response headers of the real server: HSTS on HTTPS only, ``Cache-Control: no-store`` on
every answer that carries a secret, and /docs served from this server under a strict CSP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.fixtures.provisioning_server import ProvisioningServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["http", "https"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProvisioningServer]:
    tls = request.param == "https"
    with ProvisioningServer(tmp_path_factory.mktemp(f"headers-{request.param}"), tls=tls) as run:
        yield run


def test_hsts_on_https_only(server: ProvisioningServer) -> None:
    with server.device_client() as client:
        replies = [
            client.get("/docs"),
            client.get("/login"),
            client.get("/api/v1/admin/me"),  # 401 too
            server.admin.get("/status"),
        ]
    for reply in replies:
        hsts = reply.headers.get("strict-transport-security")
        if server.tls:
            assert hsts == "max-age=31536000", reply.url
        else:
            assert hsts is None, reply.url
    if not server.tls:
        # Behind a TLS-terminating proxy on this host (uvicorn trusts 127.0.0.1's
        # X-Forwarded-Proto): the browser did use HTTPS, so it gets the header.
        with server.device_client(headers={"x-forwarded-proto": "https"}) as proxied:
            assert proxied.get("/login").headers["strict-transport-security"] == "max-age=31536000"


def test_answers_carrying_secrets_are_not_stored(server: ProvisioningServer) -> None:
    enrollment = server.admin.post("/enrollment-tokens", json={"max_uses": 5})
    assert enrollment.status_code == 201
    assert enrollment.headers["cache-control"] == "no-store"
    api_token = server.admin.post("/api-tokens", json={"name": "headers"})
    assert api_token.status_code == 201 and api_token.headers["cache-control"] == "no-store"

    mac = "b8:27:eb:00:00:71"
    server.add_device(mac)
    approved = server.enroll_request(mac, enrollment.json()["token"])
    assert approved.status_code == 200 and "secret" in approved.json()
    assert approved.headers["cache-control"] == "no-store"
    body = approved.json()
    server.add_line(mac, extension="7001", registrar="pbx.test", password="line-secret-7001")
    with server.device_client(auth=(body["device_id"], body["secret"])) as phone:
        first = phone.get("/api/v1/device/config")
        assert first.status_code == 200
        assert first.json()["accounts"][0]["password"] == "line-secret-7001"
        assert first.headers["cache-control"] == "no-store"
        again = phone.get("/api/v1/device/config")  # answered inline (render cache hit)
        assert again.status_code == 200 and again.headers["cache-control"] == "no-store"
        unchanged = phone.get(
            "/api/v1/device/config", headers={"if-none-match": first.headers["etag"]}
        )
        assert unchanged.status_code == 304


def test_docs_come_from_this_server_under_a_strict_policy(server: ProvisioningServer) -> None:
    with server.device_client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert "cdn" not in page.text and "<script>" not in page.text
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
        for source in sources:
            asset = client.get(source)
            assert asset.status_code == 200 and len(asset.content) > 100, source
        assert client.get("/docs/assets/../../etc/passwd").status_code == 404
        assert client.get("/docs/assets/index.html").status_code == 404
        assert client.get("/redoc").status_code == 404
        assert "/api/v1/admin/devices" in client.get("/openapi.json").json()["paths"]
