"""Screenshots of a served page in headless Chromium, and a check that they show a scene.

Used by tests/test_viewer.py and scripts/viewer_screenshot.py. Chromium runs with
SwiftShader (software WebGL, no GPU needed) and is driven over the DevTools protocol
(websockets, a dependency of viser): open the page, take a screenshot every second until
the canvas shows a rendered scene or the deadline passes. Every wait is bounded; the browser
(its whole process group) is killed on exit.

    with HeadlessChromium() as browser:
        shot = browser.capture("http://127.0.0.1:8080", timeout=30, ready=looks_rendered)
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
]
# Hides toasts (viser's "Software WebGL rendering detected" note) in screenshots.
HIDE_NOTIFICATIONS = (
    "(() => { if (!document.head || document.getElementById('no-toasts')) return;"
    " const s = document.createElement('style'); s.id = 'no-toasts';"
    " s.textContent = '.mantine-Notifications-root { display: none !important; }';"
    " document.head.appendChild(s); })()"
)
WEBGL_RENDERER = (
    "(() => { const gl = document.createElement('canvas').getContext('webgl2');"
    " if (!gl) return null; return gl.getParameter(gl.RENDERER); })()"
)
CANVAS_RECT = (
    "(() => { const c = document.querySelector('canvas'); if (!c) return null;"
    " const r = c.getBoundingClientRect();"
    " return [r.left, r.top, r.right, r.bottom, window.devicePixelRatio]; })()"
)


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($CHROMIUM first), or None."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Shot:
    image: np.ndarray  # [H, W, 3] uint8, the whole viewport
    canvas_box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) in image pixels
    page_text: str
    seconds: float  # from navigation to this screenshot

    def canvas(self) -> np.ndarray:
        if self.canvas_box is None:
            return self.image[:0, :0]
        x0, y0, x1, y1 = self.canvas_box
        return self.image[y0:y1, x0:x1]

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        Image.fromarray(self.image).save(path)


@dataclass
class SceneStats:
    fraction: float  # share of canvas pixels that differ from the background colour
    colours: int  # distinct colours among them (quantised to 16 levels a channel)
    std: float  # mean per-channel standard deviation of those pixels

    def __str__(self) -> str:
        return (
            f"{100 * self.fraction:.1f}% non-background, {self.colours} colours, std {self.std:.1f}"
        )


def scene_stats(region: np.ndarray, tol: int = 24) -> SceneStats:
    """How much of an RGB ``region`` is not its background (its most common colour)."""
    if region.size == 0:
        return SceneStats(0.0, 0, 0.0)
    px = region.reshape(-1, 3).astype(np.int32)
    keys = (px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]
    vals, counts = np.unique(keys, return_counts=True)
    bg_key = vals[np.argmax(counts)]
    bg = np.array([(bg_key >> 16) & 255, (bg_key >> 8) & 255, bg_key & 255])
    fg = px[np.abs(px - bg).max(axis=1) > tol]
    if len(fg) == 0:
        return SceneStats(0.0, 0, 0.0)
    q = fg // 16
    n_colours = len(np.unique((q[:, 0] << 8) | (q[:, 1] << 4) | q[:, 2]))
    return SceneStats(len(fg) / len(px), n_colours, float(fg.std(axis=0).mean()))


def looks_rendered(shot: Shot, min_fraction=0.03, min_colours=40, min_std=12.0) -> bool:
    """True when the canvas shows a rendered, non-empty, colourful scene (splats, not only
    lines or a blank page)."""
    s = scene_stats(shot.canvas())
    return s.fraction >= min_fraction and s.colours >= min_colours and s.std >= min_std


class HeadlessChromium:
    """A headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str | None = None, width: int = 800, height: int = 600):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("no chromium binary found (apt-get install chromium)")
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self.ws = None
        self._id = 0

    def __enter__(self) -> HeadlessChromium:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, timeout: float = 20.0) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.log_path = os.path.join(self.profile, "chromium.log")
        self._log = open(self.log_path, "wb")
        args = [self.binary, *CHROMIUM_FLAGS, f"--window-size={self.size[0]},{self.size[1]}"]
        args += ["--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        ws_url = None
        while time.monotonic() < deadline and ws_url is None:
            if self.proc.poll() is not None:
                raise BrowserError(
                    f"chromium exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if os.path.isfile(port_file):
                lines = open(port_file).read().split()
                if lines:
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{lines[0]}/json/list", timeout=2
                        ) as r:
                            pages = [t for t in json.load(r) if t.get("type") == "page"]
                        ws_url = pages[0]["webSocketDebuggerUrl"] if pages else None
                    except OSError:
                        pass
            time.sleep(0.1)
        if ws_url is None:
            raise BrowserError(f"chromium gave no DevTools page in {timeout:.0f} s")
        self.ws = connect(ws_url, max_size=2**28, open_timeout=timeout, close_timeout=2)
        w, h = self.size
        self.call("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1,
                  mobile=False)  # fmt: skip

    def log_tail(self, n: int = 800) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def call(self, method: str, timeout: float = 20.0, **params) -> dict:
        """One DevTools command and its result (events in between are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"DevTools {method}: no answer in {timeout:.0f} s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise BrowserError(f"DevTools {method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def screenshot(self, t0: float) -> Shot:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        rect = self.evaluate(CANVAS_RECT)
        box = None
        if rect:
            x0, y0, x1, y1, dpr = rect
            h, w = image.shape[:2]
            box = (
                max(0, int(x0 * dpr)),
                max(0, int(y0 * dpr)),
                min(w, int(x1 * dpr)),
                min(h, int(y1 * dpr)),
            )
        text = self.evaluate("document.body ? document.body.innerText : ''") or ""
        return Shot(image, box, text, time.monotonic() - t0)

    def capture(
        self,
        url: str,
        timeout: float = 30.0,
        ready: Callable[[Shot], bool] = looks_rendered,
        settle: float = 1.0,
        hide_notifications: bool = True,
    ) -> Shot:
        """Open ``url`` and screenshot it once a second until ``ready(shot)``, then once
        more after ``settle`` seconds (splats keep sorting in); the last shot at the
        deadline otherwise."""
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        t0 = time.monotonic()
        shot = None
        while time.monotonic() - t0 < timeout:
            time.sleep(1.0)
            if hide_notifications:
                self.evaluate(HIDE_NOTIFICATIONS)
            shot = self.screenshot(t0)
            if ready(shot):
                time.sleep(settle)
                return self.screenshot(t0)
        if shot is None:
            shot = self.screenshot(t0)
        return shot

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if getattr(self, "profile", None):
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None
