"""Classical 2D priors on a real scene with ground-truth masks: speed and ROI quality.

    python bench/bench_priors.py       # $SEGSPLAT_DATA (or ../shared/data)/nerd_maryrose
    python bench/bench_priors.py --scene <scene> --images images_4 --gt masks_4

1. ``extract_mask.py --backend classical`` (multi-level masks) over every view, timed.
2. ``extract_mask.py --mode roi --backend classical`` with one box prompt per view: the
   bounding box of that view's ground-truth mask. Reports the IoU of each ROI mask with
   the ground truth (mean, min, quartiles) and the time.

The scene folder is not written to: the stages run on a scratch scene whose images folder
links to the real one. Prints a table; numbers are measured, never stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import extract_mask  # noqa: E402
from priors.io import list_images  # noqa: E402
from priors.masks import load_mask_set  # noqa: E402


def gt_mask(gt_dir: str, name: str) -> np.ndarray:
    stem = os.path.splitext(name)[0]
    for ext in (".png", ".jpg", os.path.splitext(name)[1]):
        path = os.path.join(gt_dir, stem + ext)
        if os.path.isfile(path):
            return np.asarray(Image.open(path).convert("L")) > 127
    raise FileNotFoundError(f"no ground-truth mask for {name} in {gt_dir}")


def main() -> int:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.environ.get("SEGSPLAT_DATA", os.path.join(repo, "..", "shared", "data"))
    p.add_argument("--scene", default=os.path.join(data, "nerd_maryrose"))
    p.add_argument("--images", default="images_4")
    p.add_argument("--gt", default="masks_4", help="ground-truth mask folder of the scene")
    p.add_argument("--fill_holes", action="store_true", help="also report with --fill_holes")
    args = p.parse_args()
    images_dir = os.path.abspath(os.path.join(args.scene, args.images))
    names = list_images(images_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_priors") as work:
        os.symlink(images_dir, os.path.join(work, "images"))
        base = ["-s", work, "--device", "cpu", "--backend", "classical"]

        t = time.perf_counter()
        assert extract_mask.main(base) == 0
        dt = time.perf_counter() - t
        ks = [len(load_mask_set(os.path.join(work, "masks", n[:-4] + ".npz"))) for n in names]
        rows.append(
            (
                "classical masks (auto)",
                len(names),
                dt,
                f"K per view {min(ks)}-{max(ks)} (mean {np.mean(ks):.0f})",
            )
        )

        gts = {n: gt_mask(os.path.join(args.scene, args.gt), n) for n in names}
        prompts = []
        for n, g in gts.items():
            ys, xs = np.nonzero(g)
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            prompts.append({"image": n, "box": box})
        ppath = os.path.join(work, "prompts.json")
        with open(ppath, "w") as f:
            json.dump({"prompts": prompts}, f)
        variants = [[]] + ([["--fill_holes"]] if args.fill_holes else [])
        for extra in variants:
            t = time.perf_counter()
            assert extract_mask.main(base + ["--mode", "roi", "--prompts", ppath] + extra) == 0
            dt = time.perf_counter() - t
            ious = []
            for n, g in gts.items():
                roi = np.asarray(Image.open(os.path.join(work, "pure_masks", n))) > 127
                ious.append((roi & g).sum() / max((roi | g).sum(), 1))
            q = np.percentile(ious, [25, 50, 75])
            label = "classical ROI, GrabCut from GT box" + (" + fill_holes" if extra else "")
            rows.append(
                (
                    label,
                    len(names),
                    dt,
                    f"IoU mean {np.mean(ious):.4f}, min {np.min(ious):.4f}, "
                    f"quartiles {q[0]:.3f}/{q[1]:.3f}/{q[2]:.3f}",
                )
            )
    print(f"\nscene {os.path.abspath(args.scene)} ({args.images}, {len(names)} views)")
    print(f"{'stage':<50} {'views':>5} {'seconds':>8} {'s/view':>7}  result")
    for label, n, dt, res in rows:
        print(f"{label:<50} {n:>5} {dt:>8.1f} {dt / n:>7.2f}  {res}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
