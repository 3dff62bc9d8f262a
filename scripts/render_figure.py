"""A figure of a model's test renders against their ground truth, for docs and papers.

    python render.py -m output/fern --skip_train
    python scripts/render_figure.py -m output/fern -o docs/fern_3views.png

Reads ``<model>/test/ours_<N>/{gt,renders}`` (render.py's output; the latest N unless
``--iteration``) and, with ``--train_row`` (default), the training photos that the run saw
(``<model>/split.json`` and ``cfg_args``'s source path). Rows, top to bottom: the training
views (the only input), the held-out views, the renders with their PSNR. Images are
resized to one height; the PNG is written to a temporary name, then renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from arguments import parse_cfg_args  # noqa: E402

LABEL_H = 18  # pixels of caption above each tile


def latest_test_dir(model: str, iteration: int | None) -> str:
    """``<model>/test/ours_<N>`` for ``iteration`` or the largest N."""
    test = os.path.join(model, "test")
    names = [n for n in os.listdir(test) if n.startswith("ours_") and n[5:].isdigit()] if (
        os.path.isdir(test)
    ) else []  # fmt: skip
    if iteration is not None:
        names = [n for n in names if n == f"ours_{iteration}"]
    if not names:
        raise FileNotFoundError(
            f"{test}: no ours_<N> renders; make them with: python render.py -m {model} --skip_train"
        )
    return os.path.join(test, max(names, key=lambda n: int(n[5:])))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float images in [0, 1]."""
    mse = float(np.mean((a - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def load(path: str, height: int) -> Image.Image:
    img = Image.open(path).convert("RGB")
    return img.resize((round(img.width * height / img.height), height), Image.BILINEAR)


def caption(img: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + LABEL_H), "white")
    out.paste(img, (0, LABEL_H))
    ImageDraw.Draw(out).text((4, 3), text, fill="black")
    return out


def row(tiles: list[Image.Image], width: int, gap: int = 4) -> Image.Image:
    h = max(t.height for t in tiles)
    out = Image.new("RGB", (width, h), "white")
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + gap
    return out


def split_names(model: str, part: str) -> list[str]:
    """The image names of ``part`` ("train" or "test") in ``<model>/split.json``, if any."""
    split_path = os.path.join(model, "split.json")
    if not os.path.isfile(split_path):
        return []
    with open(split_path) as f:
        return list(json.load(f).get(part, []))


def training_photos(model: str) -> list[tuple[str, str]]:
    """(name, path) of the run's training views, from split.json and cfg_args."""
    train = split_names(model, "train")
    cfg_path = os.path.join(model, "cfg_args")
    if not os.path.isfile(cfg_path):
        return []
    with open(cfg_path) as f:
        cfg = parse_cfg_args(f.read())
    folder = os.path.join(cfg.source_path, getattr(cfg, "images", "images") or "images")
    return [(n, os.path.join(folder, n)) for n in train if os.path.isfile(os.path.join(folder, n))]


def make_figure(model: str, out: str, iteration: int | None, max_views: int, height: int,
                train_row: bool) -> str:  # fmt: skip
    """Write the figure to ``out``; returns a one-line summary."""
    test_dir = latest_test_dir(model, iteration)
    all_names = sorted(os.listdir(os.path.join(test_dir, "renders")))
    if not all_names:
        raise FileNotFoundError(f"{test_dir}/renders is empty")
    # render.py numbers the files in test-camera order: the Scene sorts them by name.
    labels = sorted(split_names(model, "test"))
    if len(labels) != len(all_names):
        labels = [os.path.splitext(n)[0] for n in all_names]
    names = all_names[:max_views]
    gts, renders, scores = [], [], []
    for n, shown in zip(names, labels):
        gt = load(os.path.join(test_dir, "gt", n), height)
        rd = load(os.path.join(test_dir, "renders", n), height)
        score = psnr(np.asarray(gt, np.float32) / 255, np.asarray(rd, np.float32) / 255)
        scores.append(score)
        gts.append(caption(gt, f"held-out view {shown}"))
        renders.append(caption(rd, f"render, {score:.2f} dB"))
    rows = []
    if train_row:
        photos = training_photos(model)
        if photos:
            tiles = [caption(load(p, height), f"training view {n}") for n, p in photos]
            rows.append(tiles)
    rows += [gts, renders]
    width = max(sum(t.width for t in r) + 4 * (len(r) - 1) for r in rows)
    images = [row(r, width) for r in rows]
    fig = Image.new("RGB", (width, sum(i.height for i in images) + 6 * (len(images) - 1)), "white")
    y = 0
    for im in images:
        fig.paste(im, (0, y))
        y += im.height + 6
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp.png"
    fig.save(tmp)
    os.replace(tmp, out)
    return (f"wrote {out}: {len(names)} views of {test_dir}, PSNR "
            f"{', '.join(f'{s:.2f}' for s in scores)} dB (at the figure's size)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model_path", required=True)
    p.add_argument("-o", "--out", required=True, help="PNG to write")
    p.add_argument("--iteration", type=int, default=None)
    p.add_argument("--max_views", type=int, default=3)
    p.add_argument("--height", type=int, default=180, help="tile height in pixels")
    p.add_argument("--no_train_row", action="store_true", help="leave out the training views")
    args = p.parse_args(argv)
    try:
        print(make_figure(args.model_path, args.out, args.iteration, args.max_views,
                          args.height, not args.no_train_row))  # fmt: skip
    except (FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
