"""Offline machines: the network probe answers within its timeout whatever the network
does (refused, hanging name lookup), once per host, and LPIPS then downloads nothing."""

from __future__ import annotations

import socket
import time

import pytest
from lpips_testing import closed_port_url, isolate_weight_caches, redirect_weight_urls

from utils import general_utils
from utils.general_utils import network_reachable
from utils.lpips import LPIPSWeightsMissing, load_lpips


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(general_utils, "_reachable", {})
    monkeypatch.delenv(general_utils.OFFLINE_ENV, raising=False)


def test_probe_listening_refused_and_forced_offline(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert network_reachable(f"http://127.0.0.1:{server.getsockname()[1]}/x")
    assert not network_reachable(closed_port_url() + "x")
    with pytest.raises(ValueError, match="host name"):
        network_reachable("not a url")
    monkeypatch.setenv(general_utils.OFFLINE_ENV, "1")
    assert not network_reachable("https://example.invalid/x")


def test_probe_gives_up_on_a_hanging_name_lookup_once(monkeypatch):
    """A resolver that cannot reach its name server hangs in getaddrinfo (no timeout of
    its own): the probe answers False after its timeout, and the next ask is free."""
    calls = []

    def hanging(*args, **kwargs):
        calls.append(args[0])
        time.sleep(5)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    t0 = time.perf_counter()
    assert not network_reachable("https://download.example/vgg.pth", timeout=0.5)
    assert not network_reachable("https://download.example/other.pth", timeout=0.5)
    assert time.perf_counter() - t0 < 2.0 and calls == ["download.example"]


def test_lpips_skips_the_download_without_network(monkeypatch, tmp_path):
    isolate_weight_caches(monkeypatch, tmp_path)
    redirect_weight_urls(monkeypatch, closed_port_url())
    monkeypatch.setattr(
        "utils.lpips.weights.download_weight_file",
        lambda *a, **k: pytest.fail("downloaded although the host does not answer"),
    )
    with pytest.raises(LPIPSWeightsMissing) as info:
        load_lpips("vgg", download=True)
    msg = str(info.value)
    assert "no network" in msg and "\n" not in msg and "--lpips_weights" in msg
