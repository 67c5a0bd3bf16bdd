"""A router URL whose text is not printable (a line break, a right-to-left override, a zero-width
space, a control character) is refused as a setting before anything is sent or recorded: httpx
refused it later with InvalidURL, which reached the caller raw and was recorded as error:internal,
and the URL's text went into the record and every report that names the router."""

from __future__ import annotations

import asyncio

import pytest

from nomyo_audit import SecureChatCompletion
from nomyo_audit.client._settings import check_router_url
from nomyo_audit.errors import ConfigurationError

HELLO = [{"role": "user", "content": "hello from nomyo"}]
BAD_URLS = [
    "http://127.0.0.1:9/v\n| forged | 999 |",
    "http://127.0.0.1:9/v\r\nX-Injected: 1",
    "http://127.0.0.1:9/\u202egnillib",
    "http://127.0.0.1:9/bill\u200bing",
    "http://127.0.0.1:9/\x1b[2J",
    "http://127.0.0.1:9/a\x00b",
    "http://127.0.0.1:9/a\tb",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_router_url_that_is_not_printable_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError) as raised:
        check_router_url(url, allow_http=True)
    assert raised.value.code == "configuration"
    assert "\n" not in str(raised.value) and "\u202e" not in str(raised.value)


@pytest.mark.parametrize("url", BAD_URLS[:3])
def test_a_client_refuses_such_a_url_before_sending_or_recording(url, tmp_path):
    log_path = tmp_path / "audit.db"

    async def go():
        async with SecureChatCompletion(url, allow_http=True, audit_log=str(log_path)) as chat:
            await chat.create("echo", HELLO)

    with pytest.raises(ConfigurationError):
        asyncio.run(go())
    assert not log_path.exists()


def test_a_printable_router_url_is_still_accepted():
    assert check_router_url("http://127.0.0.1:9/v1/", allow_http=True) == "http://127.0.0.1:9/v1"
    assert check_router_url("https://r.example/caf\u00e9", allow_http=False) == "https://r.example/caf\u00e9"
