"""SAM 2 checkpoint handling and backend choice (no sam2 import needed: runs on CPU)."""

from __future__ import annotations

import io
import urllib.request
from argparse import Namespace

import pytest
import torch

from priors import PriorError
from priors import sam2_backend as sb
from priors.extract import choose_backend


def test_config_from_official_names():
    assert sb.config_for_checkpoint("/x/sam2.1_hiera_large.pt") == (
        "configs/sam2.1/sam2.1_hiera_l.yaml"
    )
    assert sb.config_for_checkpoint("sam2.1_hiera_base_plus.pt").endswith("sam2.1_hiera_b+.yaml")
    assert sb.config_for_checkpoint("sam2_hiera_tiny.pt") == "configs/sam2/sam2_hiera_t.yaml"
    assert sb.config_for_checkpoint("my_finetune.pt") is None


def test_resolve_checkpoint_errors_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGSPLAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PriorError, match="no such checkpoint file"):
        sb.resolve_checkpoint(str(tmp_path / "nope.pt"), "", "large", allow_download=False)
    custom = tmp_path / "my.pt"
    custom.write_bytes(b"x")
    with pytest.raises(PriorError, match="--sam_config"):
        sb.resolve_checkpoint(str(custom), "", "large", allow_download=False)
    assert sb.resolve_checkpoint(str(custom), "cfg.yaml", "large", False) == (
        str(custom),
        "cfg.yaml",
    )
    with pytest.raises(PriorError, match="sam2.1_hiera_small.pt"):
        sb.resolve_checkpoint("", "", "small", allow_download=False)
    cached = tmp_path / "cache" / "sam2" / "sam2.1_hiera_small.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    path, config = sb.resolve_checkpoint("", "", "small", allow_download=False)
    assert path == str(cached) and config.endswith("sam2.1_hiera_s.yaml")


def test_download_offline_and_online(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise OSError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(PriorError, match=r"092824/sam2\.1_hiera_tiny\.pt"):
        sb.download_checkpoint("tiny", str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # no partial file left

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    seen = []

    def online(url, timeout=None):
        seen.append(url)
        return Response(b"weights" * 1000)

    monkeypatch.setattr(urllib.request, "urlopen", online)
    path = sb.download_checkpoint("tiny", str(tmp_path))
    assert seen == [sb.SAM2_URL + "sam2.1_hiera_tiny.pt"]
    assert open(path, "rb").read() == b"weights" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["sam2.1_hiera_tiny.pt"]


def test_checkpoint_validation(tmp_path):
    good = tmp_path / "good.pt"
    model = torch.nn.Linear(3, 4)
    torch.save({"model": model.state_dict()}, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:300])  # an interrupted download
    with pytest.raises(PriorError, match="corrupt"):
        sb.load_state_dict(str(bad))
    notsam = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, notsam)
    with pytest.raises(PriorError, match="not a SAM 2 checkpoint"):
        sb.load_state_dict(str(notsam))
    state = sb.load_state_dict(str(good))
    sb.check_state_matches(model, state, str(good), "cfg")  # no error
    with pytest.raises(PriorError, match="does not match the config cfg"):
        sb.check_state_matches(torch.nn.Linear(3, 5), state, str(good), "cfg")


def _args(**kw) -> Namespace:
    base = dict(
        backend="auto", sam_ckpt="", sam_config="", sam_model="large", random_init_weights=False
    )
    return Namespace(**{**base, **kw})


def test_backend_choice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGSPLAT_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cpu = torch.device("cpu")
    assert choose_backend(_args(), cpu).name == "classical"
    assert "no SAM 2 checkpoint given" in capsys.readouterr().out
    (tmp_path / "sam2").mkdir()
    (tmp_path / "sam2" / "sam2.1_hiera_large.pt").write_bytes(b"x")
    monkeypatch.setattr(sb, "sam2_importable", lambda: "the 'sam2' package is not installed")
    assert choose_backend(_args(), cpu).name == "classical"  # cached but cannot run
    assert "'sam2' package is not installed" in capsys.readouterr().out
    with pytest.raises(PriorError, match="--sam_ckpt given but SAM 2 cannot run"):
        choose_backend(_args(sam_ckpt=str(tmp_path / "sam2" / "sam2.1_hiera_large.pt")), cpu)
    monkeypatch.setattr(sb, "sam2_importable", lambda: None)
    be = choose_backend(_args(), cpu)
    assert be.name == "sam2" and be.config.endswith("sam2.1_hiera_l.yaml")
    be = choose_backend(_args(random_init_weights=True, sam_model="tiny"), cpu)
    assert be.name == "sam2" and be.ckpt is None and be.config.endswith("_t.yaml")
    assert "RANDOM WEIGHTS" in capsys.readouterr().out
    with pytest.raises(PriorError, match="only applies to the sam2 backend"):
        choose_backend(_args(random_init_weights=True, backend="classical"), cpu)
