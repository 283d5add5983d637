"""If-None-Match matching on the config path (RFC 9110 weak comparison)."""

from __future__ import annotations

import pytest

from offhook.provisioning.api.config_path import etag_matches

ETAG = '"7-0123456789abcdef"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (ETAG, True),
        (f"W/{ETAG}", True),
        (f'"6-old", {ETAG}', True),
        (f' "6-old" ,W/{ETAG} ', True),
        ("*", True),
        (" * ", True),
        ('"6-0123456789abcdef"', False),
        ('"7-0123456789abcdef', False),
        ("", False),
        ('"6-old", "5-older"', False),
    ],
)
def test_if_none_match(header: str, expected: bool) -> None:
    assert etag_matches(header, ETAG) is expected
