"""Headless Chromium driven over the Chrome DevTools Protocol (websockets): open pages, wait for text, collect
console errors, take screenshots. Test support only."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_SECONDS = 30.0
COMMAND_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.25
# Chromium now and then reports no end for a request the page made (seen on a Prefect UI page under load: a
# request to the local server still "running" after 90 s): past this age it no longer counts as running.
STALE_REQUEST_SECONDS = 15.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # screenshots come back base64-encoded in one message


def find_chromium() -> str | None:
    """Path of the system Chromium (Debian package `chromium`), or None."""
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@dataclass(frozen=True)
class ConsoleError:
    """One error the page reported: a console.error call, an uncaught exception, or a browser log entry."""

    source: str  # "console", "exception" or "log"
    text: str
    url: str

    def __str__(self) -> str:
        return f"[{self.source}] {self.text} ({self.url})"


def console_error(method: str, params: dict, page_url: str) -> ConsoleError | None:
    """The error a CDP event stands for, or None when the event is not an error."""
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        text = " ".join(
            str(arg.get("value", arg.get("description", arg.get("type")))) for arg in params.get("args", [])
        )
        return ConsoleError("console", text, page_url)
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text", "")
        return ConsoleError("exception", text, page_url)
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return ConsoleError("log", entry.get("text", ""), entry.get("url") or page_url)
    return None


class Page:
    """One page target: commands over its DevTools websocket, errors collected from its events."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.errors: list[ConsoleError] = []
        self.url = "about:blank"
        self.requests_in_flight: dict[str, tuple[str, float]] = {}  # request id → (URL, monotonic start)
        self.last_network_activity = time.monotonic()
        self._ids = itertools.count(1)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: object) -> dict:
        """Run a CDP command and return its result; events that arrive meanwhile are recorded."""
        command_id = next(self._ids)
        self.connection.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + COMMAND_TIMEOUT_SECONDS
        while True:
            message = json.loads(self.connection.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            self.record(message.get("method", ""), message.get("params", {}))

    def record(self, method: str, params: dict) -> None:
        """Note an event: an error of the page, or a request starting or ending."""
        error = console_error(method, params, self.url)
        if error is not None:
            self.errors.append(error)
        elif method == "Network.requestWillBeSent" and params["request"]["url"].startswith("http"):  # not blob:/data:
            self.requests_in_flight[params["requestId"]] = (params["request"]["url"], time.monotonic())
            self.last_network_activity = time.monotonic()
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.requests_in_flight.pop(params["requestId"], None)
            self.last_network_activity = time.monotonic()

    def open(self, url: str) -> None:
        """Navigate to `url`, forgetting the errors of the previous page (the SPA renders afterwards: wait for its
        text with `wait_for_text`)."""
        self.url, self.errors = url, []
        self.requests_in_flight.clear()
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def wait_for_text(self, expected: list[str], timeout: float = 60.0) -> str:
        """Poll the page's visible text until it contains every expected string; its text. AssertionError naming
        what is missing (and the console errors so far) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [item for item in expected if item not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                errors = "\n".join(map(str, self.errors)) or "none"
                raise AssertionError(
                    f"{self.url}: {missing} not shown within {timeout:.0f} s.\n"
                    f"console errors: {errors}\npage text:\n{text[:3000]}"
                )
            time.sleep(POLL_SECONDS)

    def wait_until_idle(self, quiet: float = 1.5, timeout: float = 60.0, stale: float = STALE_REQUEST_SECONDS) -> bool:
        """Wait until no request has started or ended for `quiet` seconds and none is running but for ones older than
        `stale` seconds (the page has fetched, parsed and reported what it shows); False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.evaluate("0")  # receives the events that arrived meanwhile
            now = time.monotonic()
            running = [url for url, started in self.requests_in_flight.values() if now - started < stale]
            if not running and now - self.last_network_activity >= quiet:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS)

    def select_tab(self, selector: str, text: str, timeout: float = 30.0) -> None:
        """Click, as a mouse does, the tab (an element matching `selector` whose visible text starts with `text`)
        until it is the selected one (aria-selected, or the `p-tab__active` class of Prefect's V1 UI)."""
        script = f"""(() => {{
            const found = [...document.querySelectorAll({json.dumps(selector)})]
                .find(el => el.innerText && el.innerText.trim().startsWith({json.dumps(text)}));
            if (!found) return null;
            if (found.getAttribute("aria-selected") === "true" || found.classList.contains("p-tab__active")) return [];
            found.scrollIntoView({{block: "center"}});
            const box = found.getBoundingClientRect();
            return [box.x + box.width / 2, box.y + box.height / 2];
        }})()"""
        deadline = time.monotonic() + timeout
        while (point := self.evaluate(script)) != []:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.url}: could not select the {selector} tab {text!r}")
            if point:  # a click before the page's scripts are ready is lost: the loop clicks again
                for event in ("mousePressed", "mouseReleased"):
                    self.send(
                        "Input.dispatchMouseEvent", type=event, x=point[0], y=point[1], button="left", clickCount=1
                    )
            time.sleep(1.0)

    def set_viewport(self, width: int, height: int) -> None:
        """Render the page at width x height CSS pixels (the screenshot's size)."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport at `path`."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    """A headless Chromium process with a throwaway profile; `page()` attaches to its first tab."""

    def __init__(self, executable: str, width: int = 1440, height: int = 900) -> None:
        self.executable, self.size = executable, (width, height)
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self.log_path = self.profile.parent / f"{self.profile.name}.log"
        self.process: subprocess.Popen | None = None
        self.connection: ClientConnection | None = None

    def start(self) -> Chromium:
        command = [
            self.executable,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "about:blank",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.port = self._devtools_port()
        return self

    def _devtools_port(self) -> int:
        """The port Chromium chose, from the DevToolsActivePort file of its profile."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (marker.exists() and marker.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start its DevTools server; see {self.log_path}")
            time.sleep(0.1)
        return int(marker.read_text().split()[0])

    def page(self) -> Page:
        """The first page target (the about:blank tab Chromium opened)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as response:
            targets = json.load(response)
        target = next(t for t in targets if t["type"] == "page")
        self.connection = connect(target["webSocketDebuggerUrl"], max_size=MAX_MESSAGE_BYTES, open_timeout=10)
        page = Page(self.connection)
        page.set_viewport(*self.size)
        return page

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
