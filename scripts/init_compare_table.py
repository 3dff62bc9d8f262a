"""Write a markdown table comparing trained models (results.json) into docs/RESULTS.md.

    python scripts/init_compare_table.py --runs output/a output/b --labels "COLMAP" "random" \\
        --scene data_local/fern --n_views 3 --iterations 6000 --results docs/RESULTS.md \\
        --title "Fern 3-view: train-only COLMAP points vs random init"

Reads each run's ``results.json`` (3DGS format: {"ours_<iter>": {"PSNR", "SSIM", "LPIPS"}})
and the scene's ``colmap_<N>views/summary.json`` (points, reprojection error), then replaces
the section with the same title in the results file (or appends it).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from argparse import ArgumentParser
from datetime import date


def section(title: str, rows: list[tuple[str, dict]], colmap: dict | None, note: str) -> str:
    lines = [f"## {title}", ""]
    if colmap:
        m = colmap["train_only"]["model"]
        lines.append(
            f"Train-only COLMAP points: {m['points']} points from {m['images_registered']} "
            f"views, mean reprojection error {m['mean_reprojection_error_px']:.3f} px, mean "
            f"track length {m['mean_track_length']:.2f}."
        )
        lines.append("")
    # LPIPS only when every run has it (metrics.py leaves it out without real weights).
    lpips = all("LPIPS" in r for _, r in rows)
    lines += ["| init | PSNR | SSIM |" + (" LPIPS |" if lpips else ""),
              "|---|---|---|" + ("---|" if lpips else "")]  # fmt: skip
    for label, r in rows:
        cells = f"| {label} | {r['PSNR']:.2f} | {r['SSIM']:.4f} |"
        lines.append(cells + (f" {r['LPIPS']:.4f} |" if lpips else ""))
    lines += ["", note, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", required=True)
    p.add_argument("--scene", required=True)
    p.add_argument("--n_views", type=int, required=True)
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--results", default="docs/RESULTS.md")
    p.add_argument("--title", required=True)
    a = p.parse_args(argv)
    if len(a.runs) != len(a.labels):
        p.error("--runs and --labels differ in length")
    rows = []
    for run, label in zip(a.runs, a.labels):
        path = os.path.join(run, "results.json")
        try:
            with open(path) as f:
                res = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(
                f"error: {path}: cannot read ({e}); run render.py and metrics.py first",
                file=sys.stderr,
            )
            return 1
        plain = sorted(k for k in res if not k.endswith("_pose_opt"))  # as trained
        key = f"ours_{a.iterations}" if f"ours_{a.iterations}" in res else plain[-1]
        rows.append((label, res[key]))
    colmap = None
    summ = os.path.join(a.scene, f"colmap_{a.n_views}views", "summary.json")
    if os.path.isfile(summ):
        with open(summ) as f:
            colmap = json.load(f)
    note = (
        f"Test views of the LLFF protocol, {a.iterations} iterations, measured {date.today()} "
        f"on {platform.node()} by scripts/init_compare_table.py."
    )
    text = section(a.title, rows, colmap, note)
    old = open(a.results).read() if os.path.isfile(a.results) else "# Results\n\n"
    head = f"## {a.title}"
    if head in old:
        start = old.index(head)
        end = old.find("\n## ", start + len(head))
        old = old[:start] + text + (old[end + 1 :] if end >= 0 else "")
    else:
        old = old.rstrip("\n") + "\n\n" + text
    with open(a.results, "w") as f:
        f.write(old)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
