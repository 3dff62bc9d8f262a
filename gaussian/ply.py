"""Gaussian PLY files in the exact Inria (3DGS) layout, readable by every splat viewer.

One binary little-endian ``vertex`` element, every property float32, in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3(K-1)-1} opacity
    scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

Normals are zero. ``f_rest`` is channel-major (all red coefficients of bands 1..3, then
green, then blue). Opacity is a logit, scales are logs, rotations are unnormalised wxyz
quaternions. Nothing else goes into this file: learnable tensors beyond the six core ones
and ``extras`` are written next to it as ``<name>_extras.npz`` so viewers keep working.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from torch import nn

from gaussian.model import CORE_KEYS, GaussianModel


def attribute_names(n_rest_coeffs: int) -> list[str]:
    """Property names for ``n_rest_coeffs`` = K - 1 higher SH coefficients per channel."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * n_rest_coeffs)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def _extras_path(path: str) -> str:
    return os.path.splitext(path)[0] + "_extras.npz"


def save_ply(model: GaussianModel, path: str) -> None:
    """Write ``model`` to ``path`` (atomically: temporary name, then rename)."""
    p = {k: v.detach().float().cpu() for k, v in model.params.items()}
    n = p["means"].shape[0]
    n_rest = p["shN"].shape[1]
    columns = [
        p["means"],
        torch.zeros(n, 3),
        p["sh0"].transpose(1, 2).reshape(n, -1),
        p["shN"].transpose(1, 2).reshape(n, -1),
        p["opacities"].reshape(n, 1),
        p["scales"],
        p["quats"],
    ]
    data = torch.cat(columns, dim=1).numpy()
    # Rows of float32 columns are already the PLY's record layout: view, do not copy.
    dtype = np.dtype([(name, "<f4") for name in attribute_names(n_rest)])
    elements = np.ascontiguousarray(data, dtype="<f4").view(dtype).reshape(n)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    PlyData([PlyElement.describe(elements, "vertex")]).write(tmp)
    os.replace(tmp, path)

    side = {f"param/{k}": v.numpy() for k, v in p.items() if k not in CORE_KEYS}
    side.update({f"extra/{k}": v.detach().cpu().numpy() for k, v in model.extras.items()})
    if side:
        tmp = _extras_path(path) + ".tmp.npz"
        np.savez(tmp, **side)
        os.replace(tmp, _extras_path(path))


def load_ply(path: str, device: torch.device | str = "cpu") -> GaussianModel:
    """Read an Inria-layout PLY (and its ``_extras.npz`` side file when present)."""
    try:
        vertex = PlyData.read(path)["vertex"]
    except Exception as exc:  # plyfile raises several types for broken files
        raise ValueError(f"{path}: not a readable Gaussian PLY ({exc})") from exc
    names = [p.name for p in vertex.properties]
    n_rest_total = sum(1 for name in names if name.startswith("f_rest_"))
    if n_rest_total % 3:
        raise ValueError(f"{path}: {n_rest_total} f_rest fields is not a multiple of 3")
    n_rest = n_rest_total // 3
    sh_degree = int(round((n_rest + 1) ** 0.5)) - 1
    expected = attribute_names(n_rest)
    missing = [a for a in expected if a not in names]
    if missing or (sh_degree + 1) ** 2 != n_rest + 1:
        raise ValueError(f"{path}: not an Inria Gaussian PLY (missing {missing[:4]})")

    def cols(keys):
        return torch.from_numpy(np.stack([np.asarray(vertex[k], np.float32) for k in keys], 1))

    n = len(vertex["x"])
    rest = [f"f_rest_{i}" for i in range(3 * n_rest)]
    model = GaussianModel(sh_degree)
    model.active_sh_degree = sh_degree
    tensors = {
        "means": cols(["x", "y", "z"]),
        "sh0": cols(["f_dc_0", "f_dc_1", "f_dc_2"]).reshape(n, 3, 1).transpose(1, 2),
        "shN": cols(rest).reshape(n, 3, n_rest).transpose(1, 2) if n_rest else torch.zeros(n, 0, 3),
        "opacities": cols(["opacity"]).reshape(n),
        "scales": cols(["scale_0", "scale_1", "scale_2"]),
        "quats": cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
    }
    side_path = _extras_path(path)
    if os.path.isfile(side_path):
        with np.load(side_path) as side:
            for key in side.files:
                kind, name = key.split("/", 1)
                t = torch.from_numpy(side[key])
                if kind == "param":
                    tensors[name] = t
                else:
                    model.extras[name] = t.to(device)
    model.params = {k: nn.Parameter(v.contiguous().to(device)) for k, v in tensors.items()}
    model.check()
    return model
