"""Small helpers shared by the scripts."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (3DGS's safe_state without touching stdout or devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x / (1 - x))


def pick_device(requested: str = "cuda") -> torch.device:
    """``requested`` if available; CUDA falls back to CPU with one notice."""
    if requested.startswith("cuda") and not torch.cuda.is_available():
        print("[device] CUDA is not available; running on the CPU")
        return torch.device("cpu")
    return torch.device(requested)


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` split at its first ``--``: the arguments a wrapper script parses itself, and
    the ones it hands on to train.py unchanged (empty without ``--``)."""
    if "--" not in argv:
        return list(argv), []
    cut = argv.index("--")
    return list(argv[:cut]), list(argv[cut + 1 :])


def claim_output_folder(root: Path, marker: str, owner: str, error: type = ValueError) -> None:
    """Create ``root`` for a script's outputs, or reuse it if ``owner`` made it before.

    A non-empty folder without the ``marker`` file is refused (raises ``error``), so a
    mistyped output path can never get another folder's contents deleted.
    """
    if root.exists() and not root.is_dir():
        raise error(f"{root} exists and is not a folder; pick another --output")
    if root.is_dir() and any(root.iterdir()) and not (root / marker).is_file():
        raise error(
            f"{root} is not empty and was not made by {owner} (no {marker}); "
            "pick another --output or empty it"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / marker).write_text(json.dumps({"made_by": owner}) + "\n")


OFFLINE_ENV = "SEGSPLAT_OFFLINE"  # set to 1: every network_reachable() says no at once
_reachable: dict[tuple[str, int], bool] = {}  # (host, port) -> answer, once per process


def network_reachable(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url``'s host accepts a TCP connection within ``timeout`` seconds.

    Asked before a weight download, so that an offline machine skips it instead of
    waiting on it. The name lookup and the connect run on a daemon thread that is given
    ``timeout`` seconds in all: ``socket.getaddrinfo`` has no timeout of its own, and a
    resolver that cannot reach its name server may hang for tens of seconds. The answer
    is cached per host and port for the life of the process; ``SEGSPLAT_OFFLINE=1`` in
    the environment makes it ``False`` without trying.
    """
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return False
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r} is not a URL with a host name")
    key = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    if key not in _reachable:
        answer: list[bool] = []

        def connect() -> None:
            try:
                socket.create_connection(key, timeout=timeout).close()
                answer.append(True)
            except OSError:
                answer.append(False)

        probe = threading.Thread(target=connect, daemon=True)
        probe.start()
        probe.join(timeout)
        _reachable[key] = bool(answer and answer[0])
    return _reachable[key]
