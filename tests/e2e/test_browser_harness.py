"""The browser harness's own checks that no page test exercises: axe-core must fail a bad page."""

from __future__ import annotations

import urllib.parse

import pytest
from selenium import webdriver

from tests.e2e import browser as harness
from tests.e2e.browser import REPO, check_axe, wait_visible

pytestmark = pytest.mark.slow

# An unlabeled text field and light grey text on white: both serious for axe-core.
_BAD_PAGE = ('<!doctype html><html lang="en"><head><title>bad</title></head><body><main>'
             '<h1>Bad page</h1><p style="color:#ccc;background:#fff">faint text</p>'
             '<input type="text" id="nameless"></main></body></html>')


def test_check_axe_fails_listing_serious_violations(browser: webdriver.Chrome,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    browser.get("data:text/html," + urllib.parse.quote(_BAD_PAGE))
    wait_visible(browser, "#nameless")

    # Without axe-core installed: one line saying how to get it, not a traceback.
    with monkeypatch.context() as m:
        m.setattr(harness, "AXE_JS", REPO / ".cache" / "absent" / "axe.min.js")
        with pytest.raises(pytest.fail.Exception) as missing:
            check_axe(browser, "bad")
    assert str(missing.value) == ("axe-core is missing at .cache/absent/axe.min.js: "
                                  "run scripts/test (or scripts/install-axe)"), missing.value

    with pytest.raises(pytest.fail.Exception) as failed:
        check_axe(browser, "bad")
    message = str(failed.value)
    assert message.startswith("axe-core 4."), message
    assert "on bad (laptop, light)" in message, message
    assert "color-contrast [serious]" in message, message
    assert "label [critical]" in message, message
    assert "#nameless" in message, message
