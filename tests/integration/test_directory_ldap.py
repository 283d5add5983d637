"""The remote phonebook against a real OpenLDAP (Debian slapd): keypad search, caller names,
a wrong password, a directory that went away, the service thread answering the Phone, and TLS
(ldaps:// and StartTLS) verified against the pinned CA."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from offhook.contract.config import DirectorySettings
from offhook.contract.x509 import issue_ca, issue_leaf
from offhook.firmware.devtools.certs import CertificateSet, make_certificates
from offhook.firmware.features.events import (
    CERTIFICATE_REFUSED,
    CallerNameFound,
    DirectoryEntry,
    DirectoryResults,
    LookupCaller,
    SearchDirectory,
)
from offhook.firmware.ldap_directory import (
    DirectoryCertificateError,
    DirectoryError,
    DirectoryService,
    LdapDirectory,
)
from tests.fixtures.slapd import SlapdServer, run_slapd
from tests.fixtures.slapd import slapd_server as slapd_server  # the fixture, by its name
from tests.fixtures.tls import tls_certificates  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def settings(server: SlapdServer, **changes: object) -> DirectorySettings:
    values: dict[str, object] = {
        "url": server.url,
        "base_dn": server.base_dn,
        "bind_dn": server.reader_dn,
        "bind_password": server.reader_password,
        "timeout_s": 2.0,
    }
    values.update(changes)
    return DirectorySettings.model_validate(values)


def test_search_by_name_prefix_lists_every_number(slapd_server: SlapdServer) -> None:
    directory = LdapDirectory(settings(slapd_server))
    assert directory.search("al") == [
        DirectoryEntry("Alan Abbott", "1005"),
        DirectoryEntry("Alice Anders", "+15550001001"),
        DirectoryEntry("Alice Anders", "1001"),
    ]
    # by surname too, case-insensitively; a full name with its space
    assert directory.search("BAK") == [DirectoryEntry("Bob Baker", "1002")]
    assert directory.search("carol co") == [DirectoryEntry("Carol Cole", "+155501001" + "03")]
    assert directory.search("q") == []


def test_filter_characters_are_escaped(slapd_server: SlapdServer) -> None:
    directory = LdapDirectory(settings(slapd_server))
    assert directory.search("*") == []  # a literal star, not "everyone"
    assert directory.search(")(cn=*") == []


def test_max_results_caps_the_answer(slapd_server: SlapdServer) -> None:
    directory = LdapDirectory(settings(slapd_server, max_results=1))
    assert len(directory.search("a")) == 1


def test_caller_lookup_ignores_spaces_in_the_stored_number(slapd_server: SlapdServer) -> None:
    directory = LdapDirectory(settings(slapd_server))
    assert directory.lookup("1002") == "Bob Baker"
    assert directory.lookup("+15550100103") == "Carol Cole"  # stored as "+1 555 0100 103"
    assert directory.lookup("+15550001001") == "Alice Anders"  # a mobile number
    assert directory.lookup("9999") == ""


def test_anonymous_search_is_refused_and_a_wrong_password_is_an_error(
    slapd_server: SlapdServer,
) -> None:
    # The fixture's ACL lets only the phones' account read: slapd answers 50 to anonymous.
    with pytest.raises(DirectoryError, match="insufficientAccessRights"):
        LdapDirectory(settings(slapd_server, bind_dn="", bind_password="")).search("al")
    with pytest.raises(DirectoryError, match=r"invalidCredentials"):
        LdapDirectory(settings(slapd_server, bind_password="wrong")).search("al")


def test_a_directory_that_never_answers_times_out() -> None:
    # A listener that accepts the connection and says nothing: the search must not hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        directory = LdapDirectory(
            DirectorySettings(url=f"ldap://127.0.0.1:{port}", base_dn="dc=x", timeout_s=0.5)
        )
        started = time.monotonic()
        with pytest.raises(DirectoryError):
            directory.search("al")
        assert time.monotonic() - started < 5


def test_service_answers_searches_and_lookups_off_the_caller_thread() -> None:
    with run_slapd() as server:
        posted: queue.Queue[object] = queue.Queue()
        threads: list[str] = []

        def post(event: object) -> None:
            threads.append(threading.current_thread().name)
            posted.put(event)

        service = DirectoryService(lambda: settings(server), post)
        service.start()
        try:
            service.submit(SearchDirectory(1, "bo"))
            assert posted.get(timeout=10) == DirectoryResults(
                1, (DirectoryEntry("Bob Baker", "1002"),)
            )
            service.submit(LookupCaller(7, "1004"))
            assert posted.get(timeout=10) == CallerNameFound(7, "1004", "Dave Dawson")
            service.submit(LookupCaller(8, "5555"))  # unknown: nothing posted
            service.submit(SearchDirectory(2, "zo"))
            assert posted.get(timeout=10) == DirectoryResults(
                2, (DirectoryEntry("Zoe Zimmer", "1006"),)
            )
            assert set(threads) == {"directory"}
            server.stop()  # the directory goes away: the search says why
            service.submit(SearchDirectory(3, "al"))
            answer = posted.get(timeout=10)
            assert isinstance(answer, DirectoryResults) and answer.request == 3
            assert answer.entries == () and answer.error
        finally:
            service.stop()


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_slapd(tls_certificates: CertificateSet) -> Iterator[SlapdServer]:  # noqa: F811
    with run_slapd(tls_certificates) as server:
        yield server


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificates(tmp_path_factory.mktemp("stranger")).ca_cert


def test_search_over_ldaps_with_the_pinned_ca(
    tls_slapd: SlapdServer,
    tls_certificates: CertificateSet,  # noqa: F811
) -> None:
    config = settings(tls_slapd, url=tls_slapd.ldaps_url, tls_ca_file=str(tls_certificates.ca_cert))
    directory = LdapDirectory(config)
    assert directory.search("bak") == [DirectoryEntry("Bob Baker", "1002")]
    assert directory.lookup("1004") == "Dave Dawson"


def test_search_over_start_tls_with_the_pinned_ca(
    tls_slapd: SlapdServer,
    tls_certificates: CertificateSet,  # noqa: F811
) -> None:
    config = settings(tls_slapd, start_tls=True, tls_ca_file=str(tls_certificates.ca_cert))
    assert LdapDirectory(config).search("zo") == [DirectoryEntry("Zoe Zimmer", "1006")]


@pytest.mark.parametrize("how", ["ldaps", "start_tls"])
def test_a_directory_the_pinned_ca_did_not_sign_is_refused_with_the_reason(
    tls_slapd: SlapdServer, stranger_ca: Path, how: str
) -> None:
    tls = {"url": tls_slapd.ldaps_url} if how == "ldaps" else {"start_tls": True}
    config = settings(tls_slapd, tls_ca_file=str(stranger_ca), **tls)
    with pytest.raises(DirectoryCertificateError) as caught:
        LdapDirectory(config).search("al")
    message = str(caught.value)
    assert message.startswith(f"{CERTIFICATE_REFUSED}: {config.url}: "), message
    assert "certificate verify failed" in message and str(stranger_ca) in message, message


def test_verification_is_on_by_default_and_the_system_cas_do_not_know_a_private_ca(
    tls_slapd: SlapdServer,
) -> None:
    config = settings(tls_slapd, url=tls_slapd.ldaps_url)  # no CA file: the system's CAs
    assert config.tls_verify
    with pytest.raises(DirectoryCertificateError, match="the system's CAs"):
        LdapDirectory(config).search("al")
    # verification off (a lab directory): any certificate is taken
    assert LdapDirectory(settings(tls_slapd, url=tls_slapd.ldaps_url, tls_verify=False)).search(
        "bak"
    ) == [DirectoryEntry("Bob Baker", "1002")]


def test_start_tls_to_a_directory_without_tls_is_an_error_not_a_clear_text_bind(
    slapd_server: SlapdServer,
    tls_certificates: CertificateSet,  # noqa: F811
) -> None:
    config = settings(slapd_server, start_tls=True, tls_ca_file=str(tls_certificates.ca_cert))
    with pytest.raises(DirectoryError, match="the directory refused StartTLS") as caught:
        LdapDirectory(config).search("al")
    assert not isinstance(caught.value, DirectoryCertificateError)


def test_a_missing_ca_file_is_named(slapd_server: SlapdServer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    config = settings(slapd_server, start_tls=True, tls_ca_file=str(missing))
    with pytest.raises(DirectoryError, match=f"directory.tls_ca_file {missing}: no such file"):
        LdapDirectory(config)


def test_the_service_reports_a_refused_certificate_for_the_screen(
    tls_slapd: SlapdServer, stranger_ca: Path
) -> None:
    posted: queue.Queue[object] = queue.Queue()
    config = settings(tls_slapd, url=tls_slapd.ldaps_url, tls_ca_file=str(stranger_ca))
    service = DirectoryService(lambda: config, posted.put)
    service.start()
    try:
        service.submit(SearchDirectory(5, "al"))
        answer = posted.get(timeout=10)
    finally:
        service.stop()
    assert isinstance(answer, DirectoryResults) and answer.entries == ()
    assert answer.error.startswith(CERTIFICATE_REFUSED), answer


def _certificates_for_another_name(directory: Path) -> CertificateSet:
    """A CA and a directory certificate that names only directory.example, not 127.0.0.1."""
    directory.mkdir()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "directory.example")])
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example CA")])
    ca_key, ca_cert = issue_ca(ca_name, 1)
    key, cert = issue_leaf(
        ca_key, ca_cert, name, [x509.DNSName("directory.example")],
        [ExtendedKeyUsageOID.SERVER_AUTH], 1,
    )  # fmt: skip
    paths = CertificateSet(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem", directory / "x.pem"
    )
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_a_certificate_that_does_not_name_the_host_is_refused(tmp_path: Path) -> None:
    certs = _certificates_for_another_name(tmp_path / "tls")
    with run_slapd(certs) as server:
        config = settings(server, url=server.ldaps_url, tls_ca_file=str(certs.ca_cert))
        with pytest.raises(DirectoryCertificateError, match=r"it does not name 127\.0\.0\.1"):
            LdapDirectory(config).search("al")
