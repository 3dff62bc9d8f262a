"""Screenshot of view.py's page in headless Chromium (docs/viewer.png).

    python scripts/viewer_screenshot.py -m output/demo/model -o docs/viewer.png

Serves the model in this process on a free localhost port, opens the page in headless
Chromium (SwiftShader WebGL), waits until the canvas shows the scene (at most --timeout
seconds) and saves the screenshot; exit 1 when it never does.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scene.errors import SceneError  # noqa: E402
from viewer.screenshot import HeadlessChromium, looks_rendered, scene_stats  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("-o", "--output", default="docs/viewer.png")
    parser.add_argument("--iteration", type=int, default=-1)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=750)
    parser.add_argument("--timeout", type=float, default=40.0)
    args = parser.parse_args(argv)

    from viewer.app import serve

    port = free_port()
    try:
        server = serve(args.model_path, args.iteration, "127.0.0.1", port)
    except SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        with HeadlessChromium(width=args.width, height=args.height) as browser:
            shot = browser.capture(f"http://127.0.0.1:{port}", timeout=args.timeout, settle=3.0)
    finally:
        server.stop()
    shot.save(args.output)
    ok = looks_rendered(shot)
    print(f"{args.output}: {scene_stats(shot.canvas())} after {shot.seconds:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
