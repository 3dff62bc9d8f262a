"""Finding, downloading and loading the LPIPS weights.

Two files per network:

| net  | backbone (ImageNet classifier)  | linear heads (LPIPS v0.1) |
|------|---------------------------------|---------------------------|
| vgg  | ``vgg16-397923af.pth``          | ``vgg.pth``               |
| alex | ``alexnet-owt-7be5be79.pth``    | ``alex.pth``              |

They are looked up, in order, in the folder the user names (``--lpips_weights``), in
``~/.cache/segsplat/lpips`` (``$XDG_CACHE_HOME`` respected) and in torch's own checkpoint
cache (``$TORCH_HOME/hub/checkpoints``, where other tools leave the backbones). Files still
missing are downloaded from the official URLs when ``download`` is on: first a connection
to the URL's host is tried for at most 2 s (``utils.general_utils.network_reachable``,
once per process); without one, nothing is downloaded, as with ``--lpips_no_download``.
A download is tried once, with a short timeout on every network wait; after the first
failure no other file is tried. The caller then gets ``LPIPSWeightsMissing`` with a
one-line message naming the files and where to put them.

The backbone checkpoints hold the whole classifier; only ``features.*`` is used. The head
files hold ``lin<k>.model.1.weight`` tensors of shape ``[1, C_k, 1, 1]``.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch
from tqdm import tqdm

from utils.general_utils import network_reachable
from utils.lpips.networks import LPIPS, TAP_CHANNELS

DOWNLOAD_TIMEOUT = 5.0  # seconds, for every network wait of a download
PROBE_TIMEOUT = 2.0  # seconds to find out whether a weight URL's host answers at all


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    sha256_prefix: str | None  # the ImageNet file names carry the first 8 hex digits


_HEADS_URL = (
    "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/"
)

BACKBONE_FILES: dict[str, WeightFile] = {
    "vgg": WeightFile(
        "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af"
    ),
    "alex": WeightFile(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "7be5be79",
    ),
}
HEAD_FILES: dict[str, WeightFile] = {
    "vgg": WeightFile("vgg.pth", _HEADS_URL + "vgg.pth", None),
    "alex": WeightFile("alex.pth", _HEADS_URL + "alex.pth", None),
}


class LPIPSWeightsMissing(FileNotFoundError):
    """The weight files are nowhere to be found (and could not be downloaded)."""

    def __init__(self, net: str, missing: list[WeightFile], store: Path, reason: str = ""):
        self.net = net
        self.missing = missing
        self.store = store
        files = ", ".join(f"{w.name} ({w.url})" for w in missing)
        why = f"; download failed: {reason}" if reason else ""
        super().__init__(
            f"LPIPS ({net}) left out: weights not found: {files}{why}; put them in "
            f"{store} or in a folder given with --lpips_weights"
        )


class LPIPSWeightsError(ValueError):
    """A weight file exists but is not what it should be."""


def default_cache_dir() -> Path:
    """``~/.cache/segsplat/lpips`` (under ``$XDG_CACHE_HOME`` when set)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "segsplat" / "lpips"


def search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for weight files, in order."""
    dirs = [Path(weights_dir)] if weights_dir else []
    dirs += [default_cache_dir(), Path(torch.hub.get_dir()) / "checkpoints"]
    return dirs


def find_weight_file(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    return None


def download_weight_file(wf: WeightFile, dest_dir: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Fetch ``wf.url`` into ``dest_dir/wf.name`` (temp name, checked, then renamed).

    ``timeout`` bounds every network wait (connect and each read). Raises ``OSError``
    (``urllib.error.URLError`` included) when offline, ``LPIPSWeightsError`` when the
    file's SHA-256 does not start with the expected prefix.
    """
    dest = dest_dir / wf.name
    tmp = dest_dir / f".{wf.name}.part-{os.getpid()}"
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(wf.url, timeout=timeout) as resp:
            # Only once connected: an offline machine sees the final notice and no new folder.
            print(f"[lpips] downloading {wf.url} -> {dest}")
            dest_dir.mkdir(parents=True, exist_ok=True)
            f = open(tmp, "wb")
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=wf.name, leave=False)
            with f, bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    sha.update(chunk)
                    bar.update(len(chunk))
        if wf.sha256_prefix and not sha.hexdigest().startswith(wf.sha256_prefix):
            raise LPIPSWeightsError(
                f"downloaded {wf.url} has SHA-256 {sha.hexdigest()[:8]}..., expected "
                f"{wf.sha256_prefix}...; download it again or place the file in {dest_dir}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def resolve_weight_files(
    net: str = "vgg",
    weights_dir: str | Path | None = None,
    download: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> tuple[Path, Path]:
    """Paths of (backbone, heads) for ``net``, downloading missing ones when allowed and
    when their host answers (``network_reachable``: no network means no download).

    Raises ``LPIPSWeightsMissing`` when a file can be neither found nor downloaded, and
    ``LPIPSWeightsError`` when ``weights_dir`` is given but is not a folder.
    """
    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS network {net!r}: use 'vgg' or 'alex'")
    if weights_dir and not Path(weights_dir).is_dir():
        raise LPIPSWeightsError(
            f"--lpips_weights {weights_dir} is not a folder; give the folder holding "
            f"{BACKBONE_FILES[net].name} and {HEAD_FILES[net].name}"
        )
    dirs = search_dirs(weights_dir)
    store = Path(weights_dir) if weights_dir else default_cache_dir()
    found: list[Path] = []
    missing: list[WeightFile] = []
    reason = ""
    for wf in (BACKBONE_FILES[net], HEAD_FILES[net]):
        path = find_weight_file(wf.name, dirs)
        if path is None and download and not reason:  # after one network failure, stop trying
            probe = min(timeout, PROBE_TIMEOUT)
            if not network_reachable(wf.url, probe):
                reason = f"no network (no connection to {urlsplit(wf.url).netloc} in {probe:g} s)"
            else:
                try:
                    path = download_weight_file(wf, store, timeout)
                except OSError as e:
                    reason = str(getattr(e, "reason", None) or e)
        if path is None:
            missing.append(wf)
        else:
            found.append(path)
    if missing:
        raise LPIPSWeightsMissing(net, missing, store, reason)
    return found[0], found[1]


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors; memory-mapped when possible (the VGG file is 528 MB)."""
    state = None
    for mmap in (True, False):  # mmap needs the zip format; old checkpoints are not
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception as e:  # any failure means an unreadable file
            err = e
    if state is None:
        raise LPIPSWeightsError(f"cannot read {path} ({err}); delete it and fetch it again")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LPIPSWeightsError(f"{path} does not hold a state_dict; fetch the file again")
    return state


def load_backbone_weights(model: LPIPS, path: str | Path) -> None:
    """Copy the ``features.*`` tensors of an ImageNet checkpoint into ``model.backbone``."""
    path = Path(path)
    state = _load_state_dict(path)
    expected = model.backbone.features.state_dict()
    sub = {}
    for key, ref in expected.items():
        t = state.get(f"features.{key}")
        if t is None or tuple(t.shape) != tuple(ref.shape):
            got = "missing" if t is None else f"shape {tuple(t.shape)}"
            raise LPIPSWeightsError(
                f"{path} is not the {model.net} ImageNet checkpoint: features.{key} is {got}, "
                f"expected {tuple(ref.shape)}; use {BACKBONE_FILES[model.net].name}"
            )
        sub[key] = t
    model.backbone.features.load_state_dict(sub, strict=True)


def load_head_weights(model: LPIPS, path: str | Path) -> None:
    """Copy ``lin<k>.model.<i>.weight`` (LPIPS v0.1 file) into ``model.heads``."""
    path = Path(path)
    state = _load_state_dict(path)
    for k, c in enumerate(TAP_CHANNELS[model.net]):
        # The LPIPS file names the conv model.1 (after a dropout); accept any index and an
        # optional prefix, as full LPIPS state_dicts hold the same tensors.
        pattern = re.compile(rf"(^|\.)lin{k}\.model\.\d+\.weight$")
        hits = [t for name, t in state.items() if pattern.search(name)]
        if len(hits) != 1 or tuple(hits[0].shape) != (1, c, 1, 1):
            raise LPIPSWeightsError(
                f"{path} is not the LPIPS v0.1 {model.net} head file: lin{k} weight of shape "
                f"(1, {c}, 1, 1) not found; use {HEAD_FILES[model.net].name}"
            )
        model.heads[k].model[1].weight.data.copy_(hits[0])


def load_lpips(
    net: str = "vgg",
    weights_dir: str | Path | None = None,
    download: bool = True,
    device: torch.device | str = "cpu",
    timeout: float = DOWNLOAD_TIMEOUT,
) -> LPIPS:
    """An LPIPS network with ImageNet backbone and v0.1 heads, on ``device``, in eval mode.

    Raises ``LPIPSWeightsMissing`` (weights unavailable: leave LPIPS out) or
    ``LPIPSWeightsError`` (a file is there but wrong: stop).
    """
    backbone_path, head_path = resolve_weight_files(net, weights_dir, download, timeout)
    model = LPIPS(net)
    load_backbone_weights(model, backbone_path)
    load_head_weights(model, head_path)
    model.weight_files = (backbone_path, head_path)
    return model.to(device).eval()
