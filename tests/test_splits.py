"""Sparse-view split protocols and split.json."""

from __future__ import annotations

import json
import os

import pytest

from scene.errors import SceneError
from scene.splits import load_split, make_split, save_split

FERN = [f"image{i:03d}.png" for i in range(20)]
DTU = [f"{i:06d}_rgb.png" for i in range(49)]


def test_llff_fern_3_6_9_views():
    """FreeNeRF/FSGS picks on LLFF fern (20 images): test 0, 8, 16; train round(linspace)
    over the 17 others."""
    s = make_split(FERN, "llff", 3)
    assert s["test"] == ["image000.png", "image008.png", "image016.png"]
    assert s["train"] == ["image001.png", "image010.png", "image019.png"]
    assert s["protocol"] == "llff" and s["n_views"] == 3
    pick = [int(n[5:8]) for n in make_split(FERN, "llff", 6)["train"]]
    assert pick == [1, 4, 7, 12, 15, 19]  # pool indices 0, 3, 6, 10, 13, 16
    pick = [int(n[5:8]) for n in make_split(FERN, "llff", 9)["train"]]
    assert pick == [1, 3, 5, 7, 10, 12, 14, 17, 19]


def test_llff_order_independent_and_round_half_even():
    assert make_split(list(reversed(FERN)), "mip360", 3) == {
        **make_split(FERN, "llff", 3),
        "protocol": "mip360",
    }
    names = [f"{i:02d}.png" for i in range(7)]  # test 00; pool of 6: linspace 0, 2.5, 5
    assert make_split(names, "llff", 3)["train"] == ["01.png", "03.png", "06.png"]


def test_dtu_protocol():
    s = make_split(DTU, "dtu", 3)
    assert s["train"] == [DTU[25], DTU[22], DTU[28]]
    expected_test = [
        1,
        2,
        9,
        10,
        11,
        12,
        14,
        15,
        23,
        24,
        26,
        27,
        29,
        30,
        31,
        32,
        33,
        34,
        35,
        41,
        42,
        43,
        45,
        46,
        47,
    ]
    assert s["test"] == [DTU[i] for i in expected_test]
    s9 = make_split(DTU, "dtu", 9)
    assert s9["train"] == [DTU[i] for i in (25, 22, 28, 40, 44, 48, 0, 8, 13)]
    assert s9["test"] == s["test"]
    with pytest.raises(SceneError, match="larger than the 9 DTU training views"):
        make_split(DTU, "dtu", 10, where="/data/scan24")
    with pytest.raises(SceneError, match="needs the 49 DTU views"):
        make_split(DTU[:48], "dtu", 3)


def test_3dgs_behaviour_without_n_views():
    s = make_split(FERN, "llff", 0, eval=False)
    assert s == {"protocol": "3dgs", "n_views": 0, "train": FERN, "test": []}
    s = make_split(FERN, "llff", 0, eval=True)
    assert s["test"] == [FERN[0], FERN[8], FERN[16]] and len(s["train"]) == 17
    pre = {"train": ["b.png", "a.png"], "test": ["c.png"]}
    s = make_split(["a.png", "b.png", "c.png"], "dtu", 0, predefined_split=pre, eval=True)
    assert s["train"] == ["a.png", "b.png"] and s["test"] == ["c.png"]
    s = make_split(["a.png", "b.png", "c.png"], "llff", 0, predefined_split=pre, eval=False)
    assert s["train"] == ["a.png", "b.png", "c.png"] and s["test"] == []


def test_predefined_split_pool():
    train = [f"train/r_{i}.png" for i in range(100)]
    test = [f"val/r_{i}.png" for i in range(25)]
    s = make_split(train + test, "llff", 8, predefined_split={"train": train, "test": test})
    assert s["test"] == sorted(test)
    assert all(n.startswith("train/") for n in s["train"]) and len(s["train"]) == 8
    assert s["train"][0] == sorted(train)[0] and s["train"][-1] == sorted(train)[-1]


def test_n_views_larger_than_pool():
    with pytest.raises(SceneError, match=r"/data/fern: --n_views 18 is larger than the 17"):
        make_split(FERN, "llff", 18, where="/data/fern")


def test_custom_train_views():
    s = make_split(FERN, "llff", 0, train_views=["image005", "image000.png", "image012.png"])
    assert s["protocol"] == "custom"
    assert s["train"] == ["image005.png", "image000.png", "image012.png"]
    assert s["test"] == ["image008.png", "image016.png"]  # every 8th, minus train
    s = make_split(FERN, "custom", 2, train_views=["image005", "image001", "image012"])
    assert s["train"] == ["image005.png", "image001.png"]
    with pytest.raises(SceneError, match=r"--train_views.*unknown image name\(s\) nope"):
        make_split(FERN, "custom", 0, train_views=["image001", "nope"], where="/data/fern")
    with pytest.raises(SceneError, match="larger than the 1 training views"):
        make_split(FERN, "custom", 2, train_views=["image001"])


def test_custom_from_scene_split_json():
    src = {"train": ["image003.png", "image004.png", "image007.png"], "test": ["image019.png"]}
    s = make_split(FERN, "custom", 2, source_split=src, where="/data/fern")
    assert s["train"] == ["image003.png", "image004.png"] and s["test"] == ["image019.png"]
    with pytest.raises(SceneError, match=r"/data/fern/split\.json: unknown image name"):
        make_split(FERN, "custom", 0, source_split={"train": ["x.png"]}, where="/data/fern")
    with pytest.raises(SceneError, match="custom needs --train_views or"):
        make_split(FERN, "custom", 3)


def test_unknown_protocol():
    with pytest.raises(SceneError, match="unknown --split_protocol"):
        make_split(FERN, "blender", 3)


def test_save_load_round_trip(tmp_path):
    s = make_split(FERN, "llff", 3)
    path = save_split(s, str(tmp_path))
    assert path == str(tmp_path / "split.json")
    assert os.listdir(tmp_path) == ["split.json"]  # no temporary file left
    data = json.loads((tmp_path / "split.json").read_text())
    assert list(data) == ["protocol", "n_views", "train", "test"]
    assert load_split(str(tmp_path)) == s
    assert load_split(path) == s


def test_load_split_errors(tmp_path):
    with pytest.raises(SceneError, match=r"split\.json: split file not found"):
        load_split(str(tmp_path))
    (tmp_path / "split.json").write_text('{"train": "image001.png"}')
    with pytest.raises(SceneError, match=r"split\.json: expected"):
        load_split(str(tmp_path))
    (tmp_path / "split.json").write_text("{oops")
    with pytest.raises(SceneError, match=r"split\.json: cannot parse"):
        load_split(str(tmp_path))
