"""SAM 2 end to end with random-init weights from the packaged configs (GPU machine only).

Run there with the carried wheels: scripts/gpu_priors_check.sh run. Random weights make the
masks meaningless; these tests check the code path and the output formats.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import require_scene, requires_cuda
from PIL import Image

import extract_mask
from priors import PriorError
from priors.io import load_rgb
from priors.masks import load_mask_set, save_mask_set
from priors.sam2_backend import sam2_importable

pytestmark = [
    pytest.mark.gpu,
    requires_cuda,
    pytest.mark.skipif(
        sam2_importable() is not None, reason=f"SAM 2 cannot run here: {sam2_importable()}"
    ),
]

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"


def _scene(tmp_path, n=4, size=432):
    src = require_scene("nerd_maryrose")
    names = sorted(p.name for p in (src / "images_4").glob("*.jpg"))[:n]
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    for name in names:
        Image.open(src / "images_4" / name).resize((size, size)).save(scene / "images" / name)
    return scene, names


def test_auto_masks_format_random_init(tmp_path):
    from priors import sam2_backend as sb

    src = require_scene("nerd_maryrose")
    image = load_rgb(str(next(iter(sorted((src / "images_4").glob("*.jpg"))))))
    device = torch.device("cuda")
    model = sb.build_model(TINY, None, device)
    gen = sb.make_mask_generator(
        model, points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    ms = sb.sam2_auto_masks(gen, image, min_area=0, device=device)
    k = len(ms)
    assert k > 0
    assert ms.masks.dtype == bool and ms.masks.shape == (k, *image.shape[:2])
    assert (np.diff(ms.area) <= 0).all()
    assert set(np.unique(ms.level)) <= {0, 1, 2}
    assert ms.predicted_iou.dtype == np.float32 and ms.stability_score.shape == (k,)
    save_mask_set(str(tmp_path / "a.npz"), str(tmp_path / "a.png"), ms)
    back = load_mask_set(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(back.masks, ms.masks)
    assert back.backend == "sam2"


def test_checkpoint_roundtrip_and_config_mismatch(tmp_path):
    from priors import sam2_backend as sb

    device = torch.device("cuda")
    model = sb.build_model(TINY, None, device)
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    loaded = sb.build_model(TINY, str(ckpt), device)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(PriorError, match="does not match the config"):
        sb.build_model("configs/sam2.1/sam2.1_hiera_s.yaml", str(ckpt), device)
    with pytest.raises(PriorError, match="cannot build SAM 2 from config"):
        sb.build_model("configs/sam2.1/no_such.yaml", None, device)


def test_extract_mask_cli_sam2_auto_and_roi(tmp_path):
    scene, names = _scene(tmp_path)
    rand = ["--backend", "sam2", "--random_init_weights", "--sam_model", "tiny"]
    auto = ["--pred_iou", "0", "--stability", "0", "--min_area", "0", "--points_per_side", "16"]
    assert extract_mask.main(["-s", str(scene)] + rand + auto) == 0
    for name in names:
        ms = load_mask_set(str(scene / "masks" / name.replace(".jpg", ".npz")))
        assert ms.masks.shape[1:] == (432, 432) and len(ms) > 0
        assert (scene / "masks" / name.replace(".jpg", ".png")).is_file()

    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps(
            {"prompts": [{"image": names[1], "box": [60, 60, 380, 380], "points": [[216, 216]]}]}
        )
    )
    roi = ["--mode", "roi", "--prompts", str(prompts), "--allow_empty", "--save_overlays"]
    assert extract_mask.main(["-s", str(scene)] + rand + roi) == 0
    for name in names:
        m = np.asarray(Image.open(scene / "pure_masks" / name))
        assert m.shape == (432, 432) and m.dtype == np.uint8
        assert set(np.unique(m > 127)) <= {False, True}
        assert (scene / "pure_masks_overlay" / name).is_file()
