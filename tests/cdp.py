"""A small Chrome DevTools Protocol client for the browser tests: headless Chromium, one page, evaluate, wait,
real key presses, emulated media features, a viewport size, screenshot, every console error or uncaught exception the
page produced, every WebSocket it opened, every request it made and every WebSocket message it sent."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

# key → (code, windowsVirtualKeyCode, text): what Input.dispatchKeyEvent needs for the browser to act on the key as
# on a real one (Tab moves focus, Enter submits, Space presses a button).
KEYS: dict[str, tuple[str, int, str]] = {
    "Tab": ("Tab", 9, ""),
    "Enter": ("Enter", 13, "\r"),
    "Escape": ("Escape", 27, ""),
    " ": ("Space", 32, " "),
    "PageUp": ("PageUp", 33, ""),
    "PageDown": ("PageDown", 34, ""),
    "End": ("End", 35, ""),
    "Home": ("Home", 36, ""),
    "ArrowLeft": ("ArrowLeft", 37, ""),
    "ArrowUp": ("ArrowUp", 38, ""),
    "ArrowRight": ("ArrowRight", 39, ""),
    "ArrowDown": ("ArrowDown", 40, ""),
    "Delete": ("Delete", 46, ""),
}
SHIFT = 8  # the CDP modifier bit


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Headless Chromium driven over CDP: launched with the flags this machine's closed network needs."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.profile = Path(tempfile.mkdtemp(prefix="cdp-"))
        self.process: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.problems: list[str] = []  # console errors/warnings and uncaught exceptions
        self.websockets: list[str] = []  # the URL of every WebSocket the page opened
        self.requests: list[str] = []  # the URL of every request the page made (documents, scripts, fetches)
        self.sent: list[str] = []  # the payload of every WebSocket message the page sent, in order
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        self.process = await asyncio.create_subprocess_exec(
            self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1600,1000", f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as reply:
            page = next(target for target in await reply.json() if target["type"] == "page")
        self.socket = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Runtime", "Log", "Page", "Network"):
            await self.call(f"{domain}.enable")
        # A headless page is never the focused window: without this, focus events and :focus-visible misbehave.
        await self.call("Emulation.setFocusEmulationEnabled", enabled=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._reader:
            self._reader.cancel()
        if self.socket:
            await self.socket.close()
        if self.session:
            await self.session.close()
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def _read(self) -> None:
        assert self.socket is not None
        async for message in self.socket:
            event = json.loads(message.data)
            if "id" in event and event["id"] in self._waiting:
                self._waiting.pop(event["id"]).set_result(event)
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                self.problems.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                self.problems.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif method == "Network.webSocketCreated":
                self.websockets.append(params["url"])
            elif method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Network.webSocketFrameSent":
                self.sent.append(params["response"]["payloadData"])
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                self.problems.append(f"{params['entry'].get('url', '')} {params['entry']['text']}")

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.socket is not None
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.socket.send_json({"id": ident, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def reload(self) -> None:
        await self.call("Page.reload", ignoreCache=True)

    async def viewport(self, width: int, height: int) -> None:
        """The page's viewport, whatever the window around it (screenshots of a known size)."""
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("text", "evaluation failed"))
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of `expression` once it is truthy."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            with contextlib.suppress(RuntimeError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{expression!r} stayed falsy for {timeout} s")
            await asyncio.sleep(0.1)

    async def press(self, key: str, *, shift: bool = False) -> None:
        """One real key press (down, up) on the focused element: `key` as in KeyboardEvent.key (" " for Space)."""
        code, keycode, text = KEYS[key]
        modifiers = SHIFT if shift else 0
        common = {"key": key, "code": code, "windowsVirtualKeyCode": keycode, "nativeVirtualKeyCode": keycode,
                  "modifiers": modifiers}
        if text:
            await self.call("Input.dispatchKeyEvent", type="keyDown", text=text, unmodifiedText=text, **common)
        else:
            await self.call("Input.dispatchKeyEvent", type="rawKeyDown", **common)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **common)

    async def type_text(self, text: str) -> None:
        """Text typed into the focused element, as an input method would."""
        await self.call("Input.insertText", text=text)

    async def emulate_media(self, **features: str) -> None:
        """Emulated CSS media features, e.g. prefers_reduced_motion="reduce" (underscores for dashes)."""
        await self.call("Emulation.setEmulatedMedia", features=[
            {"name": name.replace("_", "-"), "value": value} for name, value in features.items()])

    async def screenshot(self, path: Path) -> None:
        """The page once its finite animations and transitions (a drawer sliding in) have ended, at most 2 s."""
        await self.evaluate("""Promise.race([
          Promise.all(document.getAnimations()
            .filter((a) => a.effect && a.effect.getComputedTiming().endTime !== Infinity)
            .map((a) => a.finished.catch(() => null))),
          new Promise((resolve) => setTimeout(resolve, 2000))]).then(() => true)""")
        data = await self.call("Page.captureScreenshot", format="png")

        def save() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(data["data"]))

        await asyncio.to_thread(save)
