"""Browser viewer of a trained model (viser): the Gaussians, the training and test cameras,
and the segments when <model>/segments/ exists.

    python view.py -m output/fern [--iteration N] [--port 8080] [--host 127.0.0.1]

then open http://127.0.0.1:8080 in a browser (Ctrl-C stops the server). The logic lives in
viewer/ (viewer.core: pure functions; viewer.app: the viser scene and GUI).
"""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser

from scene.errors import SceneError


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model_path", required=True, help="model folder (train.py -m)")
    parser.add_argument(
        "--iteration", type=int, default=-1, help="point_cloud/iteration_N (default: latest)"
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from viewer.app import serve

        server = serve(args.model_path, args.iteration, args.host, args.port)
    except SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # port in use, bad host
        print(f"error: cannot serve on {args.host}:{args.port} ({exc})", file=sys.stderr)
        return 1
    print(f"viewer: http://{args.host}:{server.get_port()} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
