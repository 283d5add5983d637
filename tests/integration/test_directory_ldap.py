"""The remote phonebook against a real OpenLDAP (Debian slapd): keypad search, caller names,
a wrong password, a directory that went away, and the service thread answering the Phone."""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest

from offhook.contract.config import DirectorySettings
from offhook.firmware.features.events import (
    CallerNameFound,
    DirectoryEntry,
    DirectoryResults,
    LookupCaller,
    SearchDirectory,
)
from offhook.firmware.ldap_directory import DirectoryError, DirectoryService, LdapDirectory
from tests.fixtures.slapd import SlapdServer, run_slapd
from tests.fixtures.slapd import slapd_server as slapd_server  # the fixture, by its name

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
