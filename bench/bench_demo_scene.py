"""Time the demo-scene generator (scripts/make_demo_scene.py) at a few sizes.

    python bench/bench_demo_scene.py [--repeats 3]

Prints one row per size: views, SfM points kept, and the best wall time of ``repeats``
runs of the whole generation (ray casting, point sampling, writing the folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.make_demo_scene import make_demo_scene  # noqa: E402

SIZES = [
    # (width, height, n_train, n_test)
    (64, 48, 4, 3),  # the tests' and demo --fast size
    (160, 120, 8, 8),  # the demo's default
    (200, 150, 8, 8),
    (320, 240, 8, 8),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'size':>9} | {'views':>5} | {'points3D':>8} | {'best s':>6}")
    print("-" * 9 + "-|-" + "-" * 5 + "-|-" + "-" * 8 + "-|-" + "-" * 6)
    for w, h, n_train, n_test in SIZES:
        best, n_pts = float("inf"), 0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                info = make_demo_scene(
                    Path(tmp) / "scene",
                    width=w,
                    height=h,
                    n_train=n_train,
                    n_test=n_test,
                    progress=False,
                )
                best = min(best, time.perf_counter() - t)
                n_pts = info["n_points3D"]
        print(f"{w:>4}x{h:<4} | {n_train + n_test:>5} | {n_pts:>8} | {best:>6.2f}")


if __name__ == "__main__":
    main()
