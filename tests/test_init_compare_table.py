"""scripts/init_compare_table.py: the results section is written, then replaced in place."""

from __future__ import annotations

import json

from scripts.init_compare_table import main


def test_table_written_and_replaced(tmp_path):
    runs = []
    for name, psnr in (("a", 20.0), ("b", 18.5)):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(
            json.dumps({"ours_100": {"PSNR": psnr, "SSIM": 0.7, "LPIPS": 0.2}})
        )
        runs.append(str(d))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## Other\n\nkeep me\n")
    args = ["--runs", *runs, "--labels", "colmap", "random", "--scene", str(tmp_path),
            "--n_views", "3", "--iterations", "100", "--results", str(results),
            "--title", "Init"]  # fmt: skip
    assert main(args) == 0
    assert main(args) == 0  # a second run replaces the section instead of appending
    text = results.read_text()
    assert text.count("## Init") == 1 and "keep me" in text
    assert "| colmap | 20.00 | 0.7000 | 0.2000 |" in text
    assert "| random | 18.50 |" in text
