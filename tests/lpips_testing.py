"""Test helper: random LPIPS weights written in the exact formats of the real files.

The backbone file mimics the ImageNet checkpoints (``features.<i>.weight|bias`` plus
classifier tensors that the loader must ignore); the head file mimics the LPIPS v0.1
files (``lin<k>.model.1.weight``, non-negative like the trained heads).
"""

from __future__ import annotations

from pathlib import Path

import torch

from utils.lpips import BACKBONE_FILES, HEAD_FILES, LPIPS


def write_random_lpips_weights(
    net: str, folder: Path, seed: int = 0, legacy_format: bool = False
) -> LPIPS:
    """Save random weights for ``net`` under their real file names; return the same model.

    ``legacy_format`` writes the pre-zip torch format, like the older checkpoints.
    """
    torch.manual_seed(seed)
    model = LPIPS(net)
    for k in range(model.heads.n):
        w = model.heads[k].model[1].weight
        w.data.copy_(torch.rand_like(w))  # trained heads are non-negative
    backbone = {f"features.{k}": v.clone() for k, v in model.backbone.features.state_dict().items()}
    # Stand-ins for the classifier tensors of the real checkpoints (ignored by the loader).
    backbone["classifier.0.weight"] = torch.randn(8, 4)
    backbone["classifier.0.bias"] = torch.randn(8)
    heads = {f"lin{k}.model.1.weight": model.heads[k].model[1].weight.clone() for k in range(5)}
    folder.mkdir(parents=True, exist_ok=True)
    zip_format = not legacy_format
    torch.save(
        backbone, folder / BACKBONE_FILES[net].name, _use_new_zipfile_serialization=zip_format
    )
    torch.save(heads, folder / HEAD_FILES[net].name, _use_new_zipfile_serialization=zip_format)
    return model


def isolate_weight_caches(monkeypatch, root: Path) -> None:
    """Point the user caches (~/.cache/segsplat, $TORCH_HOME) at empty folders under root."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg_cache"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch_home"))


def closed_port_url() -> str:
    """An http URL on localhost where nothing listens: connecting fails at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def redirect_weight_urls(monkeypatch, base_url: str, hashes: dict[str, str] | None = None) -> None:
    """Make every LPIPS weight URL point under ``base_url`` (never the real internet in tests).

    ``hashes`` optionally maps file names to the SHA-256 prefix the download must match.
    """
    from dataclasses import replace

    from utils.lpips import weights

    for table in (weights.BACKBONE_FILES, weights.HEAD_FILES):
        for net, wf in list(table.items()):
            prefix = (hashes or {}).get(wf.name, wf.sha256_prefix)
            monkeypatch.setitem(
                table, net, replace(wf, url=base_url + wf.name, sha256_prefix=prefix)
            )
