"""What ``python -m mask_matching`` does for one scene (see ``__main__.py``).

1. read the training views, their masks and matches (``data.py``; bad input stops here,
   before anything is written);
2. the union-find baseline (``union_find.py``);
3. train the descriptor network (``fit.py``);
4. descriptors of every view, the report and the previews (``report.py``);
5. write everything into ``<scene>/.mask_matching.tmp``, then swap it into
   ``<scene>/mask_matching`` (``maps.py`` lists the files; meta.json is written last).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mask_matching.data import MatchingInput, load_matching_input
from mask_matching.fit import FitSettings, descriptor_tables, fit
from mask_matching.inputs import MaskMatchingWarning
from mask_matching.maps import (
    META,
    OUT_DIR,
    map_file,
    output_dir,
    write_model,
    write_view_map,
)
from mask_matching.report import (
    downsized,
    markdown,
    match_agreement,
    overview,
    preview,
    segment_summary,
    union_find_summary,
)
from mask_matching.union_find import union_find_views
from priors.io import load_rgb, save_image, save_json
from scene.errors import SceneError
from scene.stage_inputs import SceneViews


@dataclass
class MatchRequest(SceneViews):
    device: str = "auto"
    threads: int = 1  # CPU threads for torch (see run_mask_matching)
    tolerance: float = 0.02
    overwrite: bool = False
    previews: bool = True
    progress: bool = True
    fit: FitSettings = field(default_factory=FitSettings)


def pick_device(name: str) -> torch.device:
    """auto: CUDA when available, else CPU; cuda without a GPU is bad input."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SceneError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def run_mask_matching(req: MatchRequest) -> dict:
    """Run the stage; returns the report dict (also written as report.json)."""
    device = pick_device(req.device)
    if device.type == "cpu" and req.threads > 0:
        # The matrices are tiny (a few hundred codes per view): with several threads each
        # small op pays thread synchronisation, which on a shared 2-core machine made the
        # 500 epochs 20x slower (124 s against 5.9 s on fern; docs/MASK_MATCHING.md).
        torch.set_num_threads(req.threads)
    scene_dir = os.path.normpath(req.scene_dir)
    out = output_dir(scene_dir)
    if os.path.exists(out) and not req.overwrite:
        raise SceneError(f"{out}: exists already; pass --overwrite to replace it")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MaskMatchingWarning)
        data = load_matching_input(
            scene_dir, req.n_views, req.split_protocol, req.train_views, req.images
        )
    warn_lines = [str(w.message) for w in caught if issubclass(w.category, MaskMatchingWarning)]
    for line in warn_lines:
        print(f"warning: {line}", file=sys.stderr)
    print(
        f"[mask_matching] {data.n_views} views, masks from the {data.backend} backend, "
        f"{sum(len(p.code_a) for p in data.pairs)} matches over {len(data.pairs)} pairs; "
        f"device {device}"
    )

    t0 = time.perf_counter()
    uf = union_find_views(
        [v.labels for v in data.views],
        [(p.a, p.b, p.xy_a, p.xy_b) for p in data.pairs],
        data.image_sizes,
    )
    uf_seconds = time.perf_counter() - t0

    result = fit(data, req.fit, device, progress=req.progress)
    with torch.no_grad():
        tables = [t.detach().cpu() for t in descriptor_tables(result.net, data.views, device)]
    agreement = match_agreement(tables, data, req.tolerance)
    segments, level_ids = segment_summary(tables, data, req.tolerance)
    report = {
        "scene": scene_dir,
        "n_views": data.n_views,
        "train": data.train,
        "split_protocol": req.split_protocol,
        "mask_backend": data.backend,
        "views": [[v.name, v.n_masks, len(v.codes)] for v in data.views],
        "device": str(device),
        "epochs": req.fit.epochs,
        "fit_seconds": result.seconds,
        "union_find_seconds": uf_seconds,
        "final_loss": result.history[-1] if result.history else {},
        "history": result.history,
        "agreement": agreement,
        "segments": segments,
        "union_find": union_find_summary(uf, data),
        "settings": asdict(req.fit) | {"tolerance": req.tolerance},
        "warnings": warn_lines,
    }
    _write(scene_dir, req, data, result.net, tables, level_ids, uf, report, segments)
    return report


def _write(scene_dir, req, data: MatchingInput, net, tables, level_ids, uf, report, segments):
    out = output_dir(scene_dir)
    tmp = os.path.join(scene_dir, f".{OUT_DIR}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        files = {}
        for v, view in enumerate(data.views):
            uf_ids = uf.id_map(v, view.labels)
            files[view.name] = write_view_map(tmp, view, tables[v].numpy(), uf_ids)
        write_model(tmp, net, data.train)
        if req.previews:
            pictures = []
            for v, view in enumerate(data.views):
                image = load_rgb(os.path.join(scene_dir, req.images, view.name))
                pic = preview(v, image, data, tables, level_ids, uf, segments, req.tolerance)
                stem = os.path.splitext(map_file(view.name)[len("maps/") :])[0]
                # zlib level 1: a third of the default's time on these 2x4-panel pictures
                save_image(os.path.join(tmp, "preview", stem + ".png"), downsized(pic),
                           compress_level=1)  # fmt: skip
                pictures.append(pic)
            save_image(os.path.join(tmp, "preview", "overview.png"), overview(pictures),
                       compress_level=1)  # fmt: skip
        save_json(os.path.join(tmp, "report.json"), report)
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(markdown(report))
        meta = {
            "n_views": data.n_views,
            "train": data.train,
            "split_protocol": req.split_protocol,
            "levels": int(tables[0].shape[1]),
            "dim": int(tables[0].shape[2]),
            "tolerance": req.tolerance,
            "mask_backend": data.backend,
            "mask_sizes": {v.name: list(v.size) for v in data.views},
            "match_counts": match_count_matrix(data).tolist(),
            "maps": files,
        }
        save_json(os.path.join(tmp, META), meta)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def match_count_matrix(data: MatchingInput) -> np.ndarray:
    """[V, V] int64 symmetric: COLMAP inlier matches per pair, in training-view order."""
    counts = np.zeros((data.n_views, data.n_views), dtype=np.int64)
    for p in data.pairs:
        counts[p.a, p.b] = counts[p.b, p.a] = len(p.code_a)
    return counts


def summary_lines(report: dict) -> list[str]:
    """The lines the CLI prints at the end."""
    a, s, u = report["agreement"], report["segments"]["levels"], report["union_find"]
    per_level = ", ".join(
        f"L{i} {100 * x:.1f}% (chance {100 * c:.1f}%)"
        for i, (x, c) in enumerate(zip(a["agree_per_level"], a["chance_per_level"]))
    )
    return [
        f"[mask_matching] masks: {report['mask_backend']} backend; trained {report['epochs']} "
        f"epochs in {report['fit_seconds']:.1f} s on {report['device']}",
        f"[mask_matching] matches agreeing (< {a['tolerance']}): {per_level}; best level "
        f"{100 * a['agree_best']:.1f}% of {a['matches']}",
        "[mask_matching] matched global segments per level: "
        + ", ".join(f"L{x['level']} {x['matched_segments']}" for x in s)
        + f"; union-find baseline: {u['global_segments']}",
        f"[mask_matching] wrote {os.path.join(report['scene'], OUT_DIR)} "
        "(meta.json, model.pt, maps/, preview/, report.md)",
    ]
