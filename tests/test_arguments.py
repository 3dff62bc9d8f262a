from argparse import ArgumentParser, Namespace

from arguments import (
    ModelParams,
    OptimizationParams,
    SparseViewParams,
    get_combined_args,
    parse_cfg_args,
)


def test_upstream_defaults_unchanged():
    parser = ArgumentParser()
    ModelParams(parser)
    OptimizationParams(parser)
    a = parser.parse_args([])
    assert (a.sh_degree, a.images, a.resolution, a.white_background, a.eval) == (
        3, "images", -1, False, False)  # fmt: skip
    assert (a.iterations, a.position_lr_init, a.opacity_lr, a.densify_grad_threshold) == (
        30_000, 0.00016, 0.025, 0.0002)  # fmt: skip
    assert (a.densify_from_iter, a.densify_until_iter, a.opacity_reset_interval) == (
        500, 15_000, 3000)  # fmt: skip
    b = parser.parse_args(["-s", "x", "-m", "y", "-r", "8", "-w"])
    assert (b.source_path, b.model_path, b.resolution, b.white_background) == ("x", "y", 8, True)


def test_cfg_args_round_trip_without_eval(tmp_path):
    ns = Namespace(source_path="/a b/c", n_views=3, train_views=["x.png"], eval=True, lr=1e-3)
    assert vars(parse_cfg_args(str(ns))) == vars(ns)
    (tmp_path / "cfg_args").write_text(str(ns))
    parser = ArgumentParser()
    ModelParams(parser, sentinel=True)
    SparseViewParams(parser, sentinel=True)
    merged = get_combined_args(parser, ["-m", str(tmp_path), "--n_views", "6"])
    assert merged.n_views == 6 and merged.source_path == "/a b/c" and merged.eval is True
