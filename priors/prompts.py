"""ROI prompts: the JSON prompt file, validation against the images, the OpenCV window.

Prompt file (pixel coordinates of the image as stored; x right, y down)::

    {"prompts": [
        {"image": "IMG_9669.jpg", "points": [[412, 300], [40, 30]], "labels": [1, 0]},
        {"image": "IMG_9700.jpg", "box": [120, 80, 700, 790], "obj_id": 1}
    ]}

Each entry prompts one object (``obj_id``, default 1) on one reference image with points
(label 1 foreground, 0 background), a box ``[x0, y0, x1, y1]``, or both. The top level may
also be the bare list, or a mapping ``{"IMG_9669.jpg": {...} | [{...}, ...]}``. The ROI of
a view is the union of all objects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from priors import PriorError


@dataclass
class ObjectPrompt:
    """Prompts for one object on one image."""

    image: str  # image name relative to the images folder
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # [P, 2]
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # [P]
    box: np.ndarray | None = None  # [4] x0, y0, x1, y1
    obj_id: int = 1

    def to_dict(self) -> dict:
        d: dict = {"image": self.image, "obj_id": self.obj_id}
        if len(self.points):
            d["points"] = self.points.tolist()
            d["labels"] = self.labels.tolist()
        if self.box is not None:
            d["box"] = self.box.tolist()
        return d

    def scaled(self, sx: float, sy: float) -> ObjectPrompt:
        """The same prompt in an image resized by (sx, sy)."""
        box = None if self.box is None else self.box * np.array([sx, sy, sx, sy], np.float32)
        return ObjectPrompt(
            self.image, self.points * np.array([sx, sy], np.float32), self.labels, box, self.obj_id
        )


def _entries(data, path: str) -> list[dict]:
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if isinstance(data, dict):
        out = []
        for image, v in data.items():
            for e in v if isinstance(v, list) else [v]:
                if not isinstance(e, dict):
                    raise PriorError(f"{path}: the prompt for {image} is not an object")
                out.append({"image": image, **e})
        return out
    if isinstance(data, list) and all(isinstance(e, dict) for e in data):
        return data
    raise PriorError(f"{path}: expected {{'prompts': [...]}}, a list or a mapping of prompts")


def _match_name(name: str, names: list[str], path: str) -> str:
    if name in names:
        return name
    lower = {n.lower(): n for n in names}
    if name.lower() in lower:
        return lower[name.lower()]
    base = [n for n in names if os.path.basename(n) == name]
    if len(base) == 1:
        return base[0]
    raise PriorError(
        f"{path}: prompt image '{name}' is not among the {len(names)} images "
        f"(e.g. {', '.join(names[:3])})"
    )


def parse_prompts(
    data, sizes: dict[str, tuple[int, int]], path: str = "<prompts>"
) -> list[ObjectPrompt]:
    """Validated prompts from parsed JSON; ``sizes`` maps image name -> (width, height)."""
    names = sorted(sizes)
    prompts = []
    for i, e in enumerate(_entries(data, path)):
        where = f"{path}: prompt {i}"
        if "image" not in e:
            raise PriorError(f"{where} has no 'image'")
        image = _match_name(str(e["image"]), names, path)
        w, h = sizes[image]
        try:
            pts = np.asarray(e.get("points", []), np.float32).reshape(-1, 2)
            lab = np.asarray(e.get("labels", [1] * len(pts)), np.int32).reshape(-1)
            box = None if e.get("box") is None else np.asarray(e["box"], np.float32).reshape(4)
            obj_id = int(e.get("obj_id", 1))
        except (ValueError, TypeError) as err:
            raise PriorError(f"{where} ({image}) is malformed: {err}") from err
        if len(pts) != len(lab):
            raise PriorError(f"{where} ({image}): {len(pts)} points but {len(lab)} labels")
        if not np.isin(lab, (0, 1)).all():
            raise PriorError(f"{where} ({image}): labels must be 1 (foreground) or 0 (background)")
        if len(pts) == 0 and box is None:
            raise PriorError(f"{where} ({image}) has neither points nor a box")
        for x, y in pts:
            if not (0 <= x <= w and 0 <= y <= h):
                raise PriorError(
                    f"{where}: point ({x:g}, {y:g}) lies outside the {w}x{h} image {image}"
                )
        if box is not None:
            x0, y0, x1, y1 = box
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise PriorError(
                    f"{where}: box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] is empty or leaves the "
                    f"{w}x{h} image {image}"
                )
        prompts.append(ObjectPrompt(image, pts, lab, box, obj_id))
    if not prompts:
        raise PriorError(f"{path}: no prompts in the file")
    return prompts


def load_prompts(path: str, sizes: dict[str, tuple[int, int]]) -> list[ObjectPrompt]:
    """Read and validate a prompt file (see the module docstring)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise PriorError(f"{path}: no such prompt file (--prompts)") from e
    except json.JSONDecodeError as e:
        raise PriorError(f"{path}: not valid JSON ({e})") from e
    return parse_prompts(data, sizes, path)


def prompts_json(prompts: list[ObjectPrompt]) -> str:
    return json.dumps({"prompts": [p.to_dict() for p in prompts]}, indent=1)


# --------------------------------------------------------------------------- interactive


class ClickState:
    """Clicks on one image: left = foreground, right = background, with undo and clear."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []

    def add(self, x: float, y: float, label: int) -> None:
        self.points.append((float(x), float(y)))
        self.labels.append(int(label))

    def undo(self) -> None:
        if self.points:
            self.points.pop()
            self.labels.pop()

    def clear(self) -> None:
        self.points.clear()
        self.labels.clear()

    def prompt(self, image: str, obj_id: int = 1) -> ObjectPrompt:
        return ObjectPrompt(
            image,
            np.asarray(self.points, np.float32).reshape(-1, 2),
            np.asarray(self.labels, np.int32),
            None,
            obj_id,
        )


def display_available() -> bool:
    """True when an OpenCV window can open (a display and a GUI-enabled OpenCV build)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("segsplat-probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("segsplat-probe")
    except cv2.error:
        return False  # opencv-python-headless has no window support
    return True


def overlay(image: np.ndarray, mask: np.ndarray | None, state: ClickState | None = None):
    """[H, W, 3] uint8 RGB: the mask tinted red, clicks as green (fg) / red (bg) dots."""
    out = image.copy()
    if mask is not None and mask.any():
        out[mask] = (0.5 * out[mask] + 0.5 * np.array([255, 40, 40])).astype(np.uint8)
        edge = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
        out[edge > 0] = (255, 255, 0)
    if state is not None:
        r = max(3, round(min(image.shape[:2]) / 150))
        for (x, y), lab in zip(state.points, state.labels):
            colour = (40, 220, 40) if lab == 1 else (230, 30, 30)
            cv2.circle(out, (round(x), round(y)), r, colour, -1)
            cv2.circle(out, (round(x), round(y)), r, (255, 255, 255), 1)
    return out


def interactive_prompt(
    image: np.ndarray,  # [H, W, 3] uint8 RGB
    name: str,
    preview: Callable[[ObjectPrompt], np.ndarray],
    max_window: int = 1000,
) -> ObjectPrompt:
    """Collect clicks in an OpenCV window until Enter; Esc or q aborts with PriorError.

    Left click: foreground point; right click: background point; u: undo; c: clear;
    Enter (or space): accept. ``preview(prompt)`` returns the [H, W] bool mask shown.
    """
    h, w = image.shape[:2]
    s = min(1.0, max_window / max(h, w))
    state = ClickState()
    win = f"ROI prompt: {name}  (L fg, R bg, u undo, c clear, Enter accept, Esc abort)"
    dirty = [True]

    def on_mouse(event, x, y, flags, param):
        if event in (cv2.EVENT_LBUTTONDOWN, cv2.EVENT_RBUTTONDOWN):
            state.add(x / s, y / s, 1 if event == cv2.EVENT_LBUTTONDOWN else 0)
            dirty[0] = True

    # GUI_NORMAL: no Qt toolbar, whose right-click context menu would eat background clicks.
    cv2.namedWindow(win, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
    cv2.setMouseCallback(win, on_mouse)
    mask = None
    try:
        while True:
            if dirty[0]:
                mask = preview(state.prompt(name)) if 1 in state.labels else None
                shown = overlay(image, mask, state)
                if s < 1.0:
                    shown = cv2.resize(shown, (round(w * s), round(h * s)), cv2.INTER_AREA)
                cv2.imshow(win, shown[..., ::-1])
                dirty[0] = False
            key = cv2.waitKey(30) & 0xFF
            if key in (13, 10, 32):
                if 1 not in state.labels:
                    print("[roi] add at least one foreground (left) click first")
                    continue
                return state.prompt(name)
            if key in (27, ord("q")):
                raise PriorError("ROI prompting aborted in the window; nothing was written")
            if key == ord("u"):
                state.undo()
                dirty[0] = True
            elif key == ord("c"):
                state.clear()
                dirty[0] = True
    finally:
        cv2.destroyWindow(win)
