"""Admin REST API surface: CRUD of devices, groups, templates, lines; import; previews; users."""
# ruff: noqa: F811  (pytest fixtures imported by name are redefined as parameters)

from __future__ import annotations

import pytest

from tests.fixtures.provisioning_server import (  # noqa: F401 (fixture)
    ProvisioningServer,
    sqlite_provisioning_server,
)

pytestmark = pytest.mark.integration


def test_admin_crud_round_trip(sqlite_provisioning_server: ProvisioningServer) -> None:
    server = sqlite_provisioning_server
    api = server.admin

    # Groups: create, nest, rename, refuse a loop, refuse deleting a parent.
    assert api.post("/groups", json={"name": "emea", "kind": "site"}).status_code == 201
    assert api.post("/groups", json={"name": "paris", "parent": "emea"}).status_code == 201
    assert api.post("/groups", json={"name": "paris"}).status_code == 409
    renamed = api.patch("/groups/paris", json={"name": "paris-1"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "paris-1"
    loop = api.patch("/groups/emea", json={"parent": "paris-1"})
    assert loop.status_code == 422 and "inside itself" in loop.json()["detail"]
    assert api.delete("/groups/emea").status_code == 422
    assert api.get("/groups/nowhere").status_code == 404

    # Templates attached to a group reach its devices.
    assert (
        api.post(
            "/templates", json={"name": "night", "settings": {"features": {"dnd": True}}}
        ).status_code
        == 201
    )
    bad_template = api.post("/templates", json={"name": "bad", "settings": {"sip": {"port": -1}}})
    assert bad_template.status_code == 422 and "sip.port" in bad_template.json()["detail"]
    assert api.put("/groups/paris-1/templates/night").json()["changed_devices"] == 0

    # Devices: import CSV through the API, patch, preview config, delete.
    csv_text = (
        "mac,serial,name,group\nb8:27:eb:10:00:01,0001,one,paris-1\nb8:27:eb:10:00:02,,two,\n"
    )
    imported = api.post(
        "/devices/import", content=csv_text, headers={"Content-Type": "text/csv"}
    ).json()
    assert imported == {"created": 2, "updated": 0, "errors": []}
    patched = api.patch("/devices/b8:27:eb:10:00:02", json={"group": "emea", "name": "deux"})
    assert patched.json()["name"] == "deux" and patched.json()["revision"] == 2
    preview = api.get("/devices/b8:27:eb:10:00:01/config").json()
    assert preview["features"]["dnd"] is True and preview["device"]["name"] == "one"
    assert (
        api.patch("/templates/night", json={"settings": {"features": {"dnd": False}}}).json()[
            "changed_devices"
        ]
        == 1
    )
    assert api.get("/devices/b8:27:eb:10:00:01/config").json()["features"]["dnd"] is False

    # Lines: add, patch (password re-encrypted, masked in answers), delete.
    line = api.post(
        "/devices/b8:27:eb:10:00:01/lines",
        json={"extension": "4001", "registrar": "pbx.local", "password": "first-pw"},
    ).json()
    assert line["password"] == "***"
    clash = api.post(
        "/devices/b8:27:eb:10:00:01/lines",
        json={"extension": "4002", "registrar": "pbx.local", "position": 0},
    )
    assert clash.status_code == 409
    api.patch(f"/lines/{line['id']}", json={"password": "second-pw", "display_name": "Zoe"})
    preview = api.get("/devices/b8:27:eb:10:00:01/config").json()
    assert preview["accounts"][0]["display_name"] == "Zoe"
    assert preview["accounts"][0]["password"] == "***"  # previews never show passwords
    assert [x["extension"] for x in api.get("/lines", params={"extension": "4001"}).json()] == [
        "4001"
    ]
    assert api.delete(f"/lines/{line['id']}").status_code == 204
    assert api.get("/devices/b8:27:eb:10:00:01/config").json()["accounts"] == []
    assert api.delete("/devices/b8:27:eb:10:00:02").status_code == 204
    assert [d["mac"] for d in api.get("/devices").json()] == ["b8:27:eb:10:00:01"]

    # Group settings replace + unset; the template can be detached and deleted.
    api.patch("/groups/paris-1/settings", json={"replace": {"audio": {"ring_volume": 7}}})
    assert api.get("/devices/b8:27:eb:10:00:01/config").json()["audio"]["ring_volume"] == 7
    api.delete("/groups/paris-1/templates/night").raise_for_status()
    assert api.delete("/templates/night").status_code == 204

    # Identities: new users and their own API tokens; roles from the token's user.
    assert api.get("/me").json() == {"username": "fixture-admin", "role": "admin"}
    user = api.post(
        "/users", json={"username": "op", "password": "operator-pw-123", "role": "operator"}
    )
    assert user.status_code == 201
    short = api.post("/users", json={"username": "x", "password": "short", "role": "operator"})
    assert short.status_code == 422 and "at least" in short.json()["detail"]
    token = api.post("/api-tokens", json={"name": "ci", "ttl_days": 1}).json()["token"]
    with server.device_client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.get("/api/v1/admin/me").json()["role"] == "admin"
    assert api.get("/status").json()["devices"]["approved"] == 1
    assert api.get("/audit", params={"target_id": "fixture-admin"}).status_code == 200
