"""mask_matching: network initialisation, losses, union-find, bad input, a tiny CLI run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mask_matching import (
    DescriptorNet,
    MaskMatchingWarning,
    hierarchy_loss,
    level_agreement,
    level_distance,
    load_descriptor_maps,
    load_descriptor_model,
    load_matching_input,
    target_views,
    union_find_labels,
    union_find_views,
    view_masks,
    views_agree,
)
from mask_matching.__main__ import main
from mask_matching.fit import descriptor_tables
from mask_matching.inputs import membership, resize_index
from mask_matching.union_find import erode_labels, pixel_index
from priors.masks import MaskSet, save_mask_set
from scene.errors import SceneError
from sfm.matches import TrainMatches

# --------------------------------------------------------------------------- network


def test_heads_start_as_identity():
    torch.manual_seed(0)
    net = DescriptorNet([3, 7], levels=4, dim=16, hidden=64)
    for lv, head in enumerate(net.heads):
        assert head.weight.shape == (16, 64 if lv == 0 else 80)
        assert torch.equal(head.weight, torch.eye(16, head.in_features))
        assert torch.count_nonzero(head.bias) == 0
    x = torch.tensor([[1.0, 0.0, 1.0, 0, 0, 0, 0], [0, 1.0, 0, 1.0, 1.0, 0, 0]])
    out = net(1, x)  # [2, 4, 16]
    assert out.shape == (2, 4, 16)
    trunk = net.trunk(net.inputs[1](x))[:, :16]
    expect = torch.nn.functional.normalize(trunk, dim=-1)
    for lv in range(4):  # every level is the first 16 trunk features, normalised
        torch.testing.assert_close(out[:, lv], expect)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 4))


# ---------------------------------------------------------------------------- losses


def _toy_hierarchy():
    """Two objects A, B, each split into two parts: channels [A, B, A1, A2, B1, B2]."""
    codes = torch.tensor(
        [[1, 0, 1, 0, 0, 0], [1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1]],
        dtype=torch.float32,
    )
    counts = torch.tensor([10, 20, 30, 40])
    eye = torch.eye(16)
    feats = torch.zeros(4, 4, 16)
    feats[:, 0] = eye[[0, 0, 1, 1]]  # level 0: A parts together, B parts together
    feats[:, 1:] = eye[[2, 3, 4, 5]][:, None]  # finer levels: every part apart
    return feats, codes, counts


def test_pull_push_zero_when_perfectly_separated():
    feats, codes, counts = _toy_hierarchy()
    assert float(hierarchy_loss(feats, codes, counts)) == pytest.approx(0.0, abs=1e-7)


def test_pull_push_positive_otherwise():
    feats, codes, counts = _toy_hierarchy()
    merged = feats.clone()
    merged[:, 0] = torch.eye(16)[0]  # level 0 merges A and B: push term
    assert float(hierarchy_loss(merged, codes, counts)) > 1e-3
    split = feats.clone()
    split[1, 0] = torch.eye(16)[7]  # level 0 separates the two parts of A: pull term
    assert float(hierarchy_loss(split, codes, counts)) > 1e-3
    close = feats.clone()
    close[1, 2] = torch.nn.functional.normalize(feats[0, 2] + 0.2 * feats[1, 2], dim=0)
    assert float(hierarchy_loss(close, codes, counts)) > 0  # within the margin at level 2


def test_pull_push_is_normalised_per_view():
    """The same view at twice the resolution (4x the pixels per code) gives the same loss."""
    feats, codes, counts = _toy_hierarchy()
    merged = feats.clone()
    merged[:, 1] = torch.eye(16)[0]
    a = hierarchy_loss(merged, codes, counts)
    b = hierarchy_loss(merged, codes, counts * 4)
    torch.testing.assert_close(a, b)


def test_level_distance_and_agreement():
    f = torch.nn.functional.normalize(torch.randn(5, 4, 16), dim=-1)
    g = f.clone()
    g[:, 2] = -g[:, 2]
    d = level_distance(f, g)  # [5, 4]
    assert d.shape == (5, 4)
    torch.testing.assert_close(d[:, 2], torch.full((5,), 4.0 / 16))
    assert level_agreement(f, g).tolist() == [[True, True, False, True]] * 5
    assert views_agree(f, g).all() and not views_agree(f, g, reduce="max").any()


# ------------------------------------------------------------------------- membership


def test_membership_uncovered_channel_and_codes():
    masks = np.zeros((2, 6, 8), bool)
    masks[0, :, :4] = True  # left half
    masks[1, :3, :4] = True  # its top
    member = membership(masks)  # [6, 8, 3]
    assert member.shape == (6, 8, 3)
    # uncovered = right half eroded by 3x3: column 4 (next to the mask) is not in it
    assert not member[:, 4, 0].any() and member[:, 5:, 0].all()
    vm = view_masks("a.png", masks, "classical")
    assert vm.channels == 3 and len(vm.codes) == 4  # top-left, bottom-left, band, uncovered
    assert vm.counts.sum() == 48 and vm.counts[0] == vm.counts.max()
    assert vm.codes[vm.code_index[0, 0]].tolist() == [False, True, True]


def test_single_mask_view_uses_uncovered_channel_only():
    masks = np.zeros((1, 6, 8), bool)
    masks[0, :, :4] = True
    with pytest.warns(MaskMatchingWarning, match="single mask"):
        vm = view_masks("b.png", masks, "classical")
    assert vm.channels == 1 and vm.n_masks == 0
    with pytest.warns(MaskMatchingWarning, match="no mask"):
        vm = view_masks("c.png", np.zeros((0, 6, 8), bool), "none")
    assert vm.channels == 1 and len(vm.codes) == 1


def test_resize_index_nearest_at_centres():
    idx = np.arange(4, dtype=np.int32).reshape(2, 2)
    up = resize_index(idx, 4, 4)
    assert up.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert resize_index(up, 2, 2).tolist() == idx.tolist()


# ------------------------------------------------------------------------- union-find


def test_union_find_merges_exactly_the_linked_labels():
    # view 0 labels 1..3, view 1 labels 1..2, view 2 labels 1..2
    links = [
        (0, np.array([1, 1, 0, 2]), 1, np.array([2, 2, 1, 0])),  # 0:1-1:2; others unlabelled
        (1, np.array([2]), 2, np.array([1])),  # 1:2-2:1, so 0:1, 1:2, 2:1 are one segment
        (0, np.array([3]), 2, np.array([2])),  # 0:3-2:2
    ]
    res = union_find_labels([3, 2, 2], links)
    g = res.global_ids
    assert res.n_global == 2
    assert g[0][1] == g[1][2] == g[2][1] >= 0
    assert g[0][3] == g[2][2] >= 0 and g[0][3] != g[0][1]
    assert g[0][2] == -1 and g[1][1] == -1  # never linked: unmatched
    assert g[0][0] == g[1][0] == g[2][0] == -1  # no label
    assert res.links == 4 and res.matches == 6
    # min_links: a single linking match is not enough
    res2 = union_find_labels([3, 2, 2], links, min_links=2)
    assert res2.n_global == 1 and res2.global_ids[0][1] == res2.global_ids[1][2]


def test_union_find_views_erodes_borders_and_reads_colmap_pixels():
    a = np.zeros((8, 8), np.int32)
    a[:, 4:] = 1
    b = np.ones((8, 8), np.int32) * 2
    assert (erode_labels(a)[:, 3:5] == 0).all() and erode_labels(a)[0, 7] == 1
    # (6.5, 2.5) is pixel row 2, col 6 (inside label 1); (4.2, 2.5) is col 4, on the border
    xy_a = np.array([[6.5, 2.5], [4.2, 2.5]], np.float32)
    xy_b = np.array([[1.5, 1.5], [1.5, 1.5]], np.float32)
    assert pixel_index(xy_a, (8, 8), (8, 8)).tolist() == [[2, 6], [2, 4]]
    assert pixel_index(xy_a, (4, 4), (8, 8)).tolist() == [[1, 3], [1, 2]]
    res = union_find_views([a, b], [(0, 1, xy_a, xy_b)], [(8, 8), (8, 8)])
    assert res.links == 1 and res.n_global == 1
    assert res.global_ids[0][1] == res.global_ids[1][2] == 0


# ---------------------------------------------------------------------- toy scene


NAMES = ["v0.png", "v1.png", "v2.png"]
H, W = 24, 32


def _view_masks(shift: int) -> MaskSet:
    """Left object (split top/bottom) and right object, border at column 16 + shift."""
    m = np.zeros((4, H, W), bool)
    m[0, :, : 16 + shift] = True
    m[1, :, 16 + shift :] = True
    m[2, : H // 2, : 16 + shift] = True
    m[3, H // 2 :, : 16 + shift] = True
    return MaskSet(m, np.ones(4), np.ones(4), np.array([0, 0, 1, 1]), "classical")


def make_toy_scene(root: str, masks: bool = True, matches: bool = True) -> str:
    scene = os.path.join(root, "toy")
    os.makedirs(os.path.join(scene, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    shifts = [0, 2, -2]
    for name, s in zip(NAMES, shifts):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            os.path.join(scene, "images", name)
        )
        if masks:
            stem = os.path.splitext(name)[0]
            save_mask_set(
                os.path.join(scene, "masks", stem + ".npz"),
                os.path.join(scene, "masks", stem + ".png"),
                _view_masks(s),
            )
    if matches:
        # points on the three segments (top-left, bottom-left, right), moved with the shift
        base = np.array([[4.5, 4.5], [8.5, 18.5], [26.5, 10.5], [6.5, 8.5], [28.5, 20.5]])
        pairs, xa, xb, offsets = [], [], [], [0]
        for i in range(3):
            for j in range(i + 1, 3):
                pa = base + [shifts[i], 0]
                pb = base + [shifts[j], 0]
                pairs.append((i, j))
                xa.append(pa)
                xb.append(pb)
                offsets.append(offsets[-1] + len(base))
        m = len(base) * 3
        TrainMatches(
            names=list(NAMES),
            sizes=np.array([[W, H]] * 3),
            pairs=np.array(pairs),
            offsets=np.array(offsets),
            xy_a=np.concatenate(xa).astype(np.float32),
            xy_b=np.concatenate(xb).astype(np.float32),
            kp_a=np.zeros(m, np.int32),
            kp_b=np.zeros(m, np.int32),
        ).save(_matches_path(scene))
    return scene


def _matches_path(scene: str) -> str:
    folder = os.path.join(scene, "colmap_3views")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, "matches.npz")


def _cli(scene: str, *extra: str) -> int:
    return main(
        ["-s", scene, "--n_views", "3", "--split_protocol", "custom", "--train_views", *NAMES]
        + ["--device", "cpu", "--quiet", *extra]
    )


def test_missing_masks_names_the_command(tmp_path, capsys):
    scene = make_toy_scene(str(tmp_path), masks=False)
    assert _cli(scene) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "python extract_mask.py -s" in err and "masks" in err
    assert not os.path.exists(os.path.join(scene, "mask_matching"))


def test_missing_matches_names_the_command(tmp_path, capsys):
    scene = make_toy_scene(str(tmp_path), matches=False)
    assert _cli(scene) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "python colmap_match.py -s" in err and "--n_views 3" in err


def test_matches_of_other_views_are_refused(tmp_path):
    scene = make_toy_scene(str(tmp_path))
    tm = TrainMatches.load(_matches_path(scene))
    tm.names = ["v0.png", "v1.png", "other.png"]
    tm.save(_matches_path(scene))
    with pytest.raises(SceneError, match="other training views"):
        load_matching_input(scene, 3, "custom", NAMES)


def test_view_without_masks_takes_part_with_a_warning(tmp_path):
    scene = make_toy_scene(str(tmp_path))
    os.remove(os.path.join(scene, "masks", "v2.npz"))
    with pytest.warns(MaskMatchingWarning, match="v2.png"):
        data = load_matching_input(scene, 3, "custom", NAMES)
    assert [v.channels for v in data.views] == [5, 5, 1]
    assert data.backend == "classical"


def test_cli_end_to_end_and_training_api(tmp_path, capsys):
    scene = make_toy_scene(str(tmp_path))
    assert _cli(scene, "--epochs", "150") == 0
    out = capsys.readouterr().out
    assert "classical backend" in out and "matched global segments" in out
    folder = os.path.join(scene, "mask_matching")
    for rel in ["meta.json", "model.pt", "report.json", "report.md", "preview/overview.png"]:
        assert os.path.isfile(os.path.join(folder, rel)), rel
    for name in NAMES:
        stem = name[:-4]
        assert os.path.isfile(os.path.join(folder, "maps", stem + ".npz"))
        assert Image.open(os.path.join(folder, "preview", stem + ".png")).size == (4 * W, 2 * H)
    meta = json.load(open(os.path.join(folder, "meta.json")))
    assert meta["n_views"] == 3 and meta["train"] == NAMES and meta["mask_backend"] == "classical"
    report = json.load(open(os.path.join(folder, "report.json")))
    assert report["agreement"]["matches"] == 15
    assert report["agreement"]["agree_best"] > 0.9  # the toy matches are easy

    # the maps the training side loads, resized to a training resolution
    maps = load_descriptor_maps(scene, list(reversed(NAMES)), sizes=(12, 16))
    dm = maps["v1.png"]
    assert dm.code_index.shape == (12, 16) and dm.dense().shape == (4, 16, 12, 16)
    xy = torch.tensor([[2.5, 2.5], [15.9, 11.9], [-1.0, 3.0]])
    desc, inside = dm.sample(xy)
    assert desc.shape == (3, 4, 16) and inside.tolist() == [True, True, False]
    torch.testing.assert_close(desc[0], dm.dense()[:, :, 2, 2])

    # the network and codes for refinement reproduce the stored tables
    net, views = load_descriptor_model(scene, NAMES)
    with torch.no_grad():
        tables = descriptor_tables(net, views)
    full = load_descriptor_maps(scene, NAMES)
    for view, table in zip(views, tables):
        torch.testing.assert_close(table, full[view.name].table)

    # targets by match count, never the source (the toy has 5 matches per pair)
    assert target_views(scene, NAMES, "v1.png") == ["v0.png", "v2.png"]
    assert target_views(scene, NAMES, "v1.png", k=1) == ["v0.png"]

    # maps of another --n_views are refused; re-running needs --overwrite
    with pytest.raises(SceneError, match="--n_views 3.*2 views.*--n_views 2"):
        load_descriptor_maps(scene, NAMES[:2])
    assert _cli(scene, "--epochs", "2") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert _cli(scene, "--epochs", "2", "--overwrite", "--no_previews") == 0


def test_target_views_by_match_count(tmp_path):
    scene = make_toy_scene(str(tmp_path))
    tm = TrainMatches.load(_matches_path(scene))
    keep = np.r_[0:5, 5:7]  # pair v0-v1: 5 matches, v0-v2: 2, v1-v2: none (as DTU 22-28)
    tm.xy_a, tm.xy_b, tm.kp_a, tm.kp_b = tm.xy_a[keep], tm.xy_b[keep], tm.kp_a[keep], tm.kp_b[keep]
    tm.offsets = np.array([0, 5, 7, 7])
    tm.save(_matches_path(scene))
    assert _cli(scene, "--epochs", "2", "--no_previews") == 0
    assert target_views(scene, NAMES, "v2.png") == ["v0.png", "v1.png"]
    assert target_views(scene, NAMES, "v2.png", min_matches=1) == ["v0.png"]
    assert target_views(scene, NAMES, "v0.png") == ["v1.png", "v2.png"]
    meta = json.load(open(os.path.join(scene, "mask_matching", "meta.json")))
    assert meta["match_counts"] == [[0, 5, 2], [5, 0, 0], [2, 0, 0]]
