"""scripts/render_figure.py: the renders-against-ground-truth figure of the docs."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from scripts.render_figure import main, make_figure, psnr


def _model(tmp_path, n_test=2):
    """A model folder as render.py leaves it, with a scene of two training photos."""
    scene, model = tmp_path / "scene", tmp_path / "model"
    (scene / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), np.uint8)).save(scene / "images" / name)
    test = model / "test" / "ours_100"
    for sub in ("gt", "renders"):
        (test / sub).mkdir(parents=True)
    for i in range(n_test):
        gt = rng.integers(0, 255, (40, 60, 3), np.uint8)
        Image.fromarray(gt).save(test / "gt" / f"{i:05d}.png")
        Image.fromarray(255 - gt).save(test / "renders" / f"{i:05d}.png")
    (model / "split.json").write_text(
        json.dumps({"train": ["a.png", "b.png"], "test": [f"t{i}.png" for i in range(n_test)]})
    )
    (model / "cfg_args").write_text(f"Namespace(source_path={str(scene)!r}, images='images')")
    return str(model)


def test_the_figure_has_a_row_of_training_views_held_out_views_and_renders(tmp_path):
    model = _model(tmp_path)
    out = str(tmp_path / "fig" / "f.png")
    line = make_figure(model, out, None, max_views=3, height=30, train_row=True)
    fig = Image.open(out)
    assert fig.height == 3 * (30 + 18) + 2 * 6  # three captioned rows
    assert fig.width >= 2 * 45  # two tiles of 45 px (60x40 at height 30) side by side
    assert "2 views" in line and not os.path.exists(out + ".tmp.png")
    make_figure(model, out, 100, max_views=1, height=30, train_row=False)
    assert Image.open(out).height == 2 * (30 + 18) + 6


def test_psnr_and_a_model_without_renders_is_one_line(tmp_path, capsys):
    a = np.zeros((4, 4, 3))
    assert abs(psnr(a, a + 0.1) - 20.0) < 1e-6
    (tmp_path / "m").mkdir()
    assert main(["-m", str(tmp_path / "m"), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "python render.py -m" in err and len(err.strip().splitlines()) == 1
