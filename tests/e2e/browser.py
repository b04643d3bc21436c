"""The shared headless Chromium harness for the web UI's browser tests.

Chromium and chromedriver come from Debian (`scripts/test` installs them); selenium drives the
system chromedriver directly, so Selenium Manager never runs and nothing is downloaded.
axe-core comes from the npm registry, pinned and sha512-checked (`scripts/install-axe`), and is
injected through WebDriver, whose scripts run outside the page's Content-Security-Policy.

Screenshots go to `test-output/web/<module>.<test>/` at the repository root (gitignored, kept by
CI): `<page>-laptop.png`, `<page>-phone.png`, with `-dark` added under a dark color scheme.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
OUTPUT_ROOT = REPO / "test-output" / "web"
AXE_JS = REPO / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 15  # seconds for any one page change; they take milliseconds when all is well

Width = Literal["laptop", "phone"]
Scheme = Literal["light", "dark"]
#: CSS pixels of the viewport; the phone is a common 6.1" handset.
WIDTHS: dict[Width, tuple[int, int]] = {"laptop": (1280, 800), "phone": (390, 844)}
#: axe-core impacts that fail a test (the issue's bar: no serious or critical violations).
FAILING_IMPACTS = ("serious", "critical")
_TARGETS_SHOWN = 3

T = TypeVar("T")


@dataclass
class _State:
    """What the helpers need to know about one driver: where its pictures go and how it looks."""

    output: Path
    width: Width = "laptop"
    scheme: Scheme = "light"


_states: dict[str, _State] = {}


def _state(driver: webdriver.Chrome) -> _State:
    state = _states.get(driver.session_id or "")
    if state is None:
        raise RuntimeError("this driver was not made by the `browser` fixture")
    return state


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed: apt-get install chromium chromium-driver "
                    "(scripts/test does it)", pytrace=False)
    if not Path(CHROMEDRIVER).is_file():
        pytest.fail(f"chromedriver is missing at {CHROMEDRIVER}: apt-get install chromium-driver "
                    "(scripts/test does it)", pytrace=False)
    return path


def output_dir(request: pytest.FixtureRequest) -> Path:
    """The test's own folder under test-output/web/, emptied so it shows only this run."""
    module = Path(str(request.node.fspath)).stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{module}.{request.node.name}")
    folder = OUTPUT_ROOT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium profile per test at laptop width in light mode, quit after."""
    binary = _chromium()
    monkeypatch.setenv("SE_OFFLINE", "true")  # should Selenium Manager ever run: no downloads
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    options.accept_insecure_certs = True  # the proxy's certificate is self-signed
    width, height = WIDTHS["laptop"]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--ignore-certificate-errors",
                 "--no-proxy-server", f"--window-size={width},{height}",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    session = driver.session_id or ""
    try:
        _states[session] = _State(output=output_dir(request))
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        set_width(driver, "laptop")
        set_color_scheme(driver, "light")
        yield driver
    finally:
        _states.pop(session, None)
        driver.quit()


def wait_until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T | Literal[False]],
               message: str = "", timeout: float = WAIT) -> T:
    """Poll `condition` until it returns something truthy; fail with `message` on timeout."""
    return WebDriverWait(driver, timeout).until(condition, message)


def wait_visible(driver: webdriver.Chrome, css: str, timeout: float = WAIT) -> WebElement:
    """The first element matching `css` once it is displayed."""
    def shown(d: webdriver.Chrome) -> WebElement | Literal[False]:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else False
    return wait_until(driver, shown, f"{css} never became visible", timeout)


def wait_text(driver: webdriver.Chrome, css: str, text: str,
              timeout: float = WAIT) -> WebElement:
    """The first element matching `css` once it is displayed and its text contains `text`."""
    def has(d: webdriver.Chrome) -> WebElement | Literal[False]:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() and text in found[0].text else False
    return wait_until(driver, has, f"{css} never showed {text!r}", timeout)


def set_width(driver: webdriver.Chrome, width: Width) -> None:
    """Lay the page out at a laptop's or a phone's viewport (the phone honours meta viewport)."""
    w, h = WIDTHS[width]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": w, "height": h, "deviceScaleFactor": 1, "mobile": width == "phone"})
    _state(driver).width = width
    _settle(driver)


# Two frames; with a terminal on the page also past the console's debounced refit (150 ms).
_SETTLE = """
const done = arguments[arguments.length - 1];
const ms = document.querySelector(".xterm") ? 250 : 0;
requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, ms)));
"""


def _settle(driver: webdriver.Chrome) -> None:
    """Let the page lay itself out again after a viewport change, so a picture never catches
    it halfway (a terminal not yet refitted leaves a blank box over the console's status bar)."""
    driver.execute_async_script(_SETTLE)


def set_color_scheme(driver: webdriver.Chrome, scheme: Scheme) -> None:
    """Emulate `prefers-color-scheme`, so the dark look can be checked and photographed."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})
    _state(driver).scheme = scheme


def screenshot(driver: webdriver.Chrome, page: str) -> Path:
    """Save the whole page (not only the viewport) as `<page>-<width>[-dark].png`; return it."""
    state = _state(driver)
    suffix = "-dark" if state.scheme == "dark" else ""
    path = state.output / f"{page}-{state.width}{suffix}.png"
    w, _ = WIDTHS[state.width]
    height = driver.execute_script(
        "return Math.ceil(Math.max(document.documentElement.scrollHeight,"
        " document.body ? document.body.scrollHeight : 0, window.innerHeight))")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": w, "height": int(height), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _axe_source() -> str:
    if not AXE_JS.is_file():
        pytest.fail(f"axe-core is missing at {AXE_JS.relative_to(REPO)}: run scripts/test "
                    "(or scripts/install-axe)", pytrace=False)
    return AXE_JS.read_text()


_RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"]})
  .then((r) => done({violations: r.violations, version: axe.version}))
  .catch((e) => done({error: String(e)}));
"""


def check_axe(driver: webdriver.Chrome, page: str) -> list[dict[str, Any]]:
    """Run axe-core on the current page; fail listing every serious or critical violation.

    The full result goes next to the screenshots as `<page>-<width>[-dark]-axe.json`. Returns
    the milder violations, which do not fail the test.
    """
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(_axe_source())
    result = driver.execute_async_script(_RUN_AXE)
    if "error" in result:
        pytest.fail(f"axe-core could not run on {page}: {result['error']}", pytrace=False)
    violations: list[dict[str, Any]] = result["violations"]
    state = _state(driver)
    suffix = "-dark" if state.scheme == "dark" else ""
    (state.output / f"{page}-{state.width}{suffix}-axe.json").write_text(
        json.dumps(violations, indent=1))
    bad = [v for v in violations if v.get("impact") in FAILING_IMPACTS]
    if bad:
        lines = [f"axe-core {result['version']}: {len(bad)} serious or critical violation(s) on "
                 f"{page} ({state.width}, {state.scheme}):"]
        for v in bad:
            targets = [" ".join(map(str, n.get("target", []))) for n in v.get("nodes", [])]
            more = f" (+{len(targets) - _TARGETS_SHOWN} more)" if len(targets) > _TARGETS_SHOWN else ""
            lines.append(f"  {v['id']} [{v['impact']}]: {v['help']}; at "
                         f"{', '.join(targets[:_TARGETS_SHOWN])}{more}")
        pytest.fail("\n".join(lines), pytrace=False)
    return [v for v in violations if v.get("impact") not in FAILING_IMPACTS]


def check_page(driver: webdriver.Chrome, page: str,
               widths: tuple[Width, ...] = ("laptop", "phone"),
               schemes: tuple[Scheme, ...] = ("light", "dark")) -> list[Path]:
    """Screenshot the page at each width and color scheme, each one passing axe-core.

    Leaves the driver at laptop width in light mode; returns the pictures written.
    """
    shots = []
    for scheme in schemes:
        set_color_scheme(driver, scheme)
        for width in widths:
            set_width(driver, width)
            shot = screenshot(driver, page)
            assert shot.stat().st_size > 0, shot
            shots.append(shot)
            check_axe(driver, page)
    set_color_scheme(driver, "light")
    set_width(driver, "laptop")
    return shots
