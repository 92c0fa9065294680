"""``python -m cgr_discovery.testing``: run the GitHub simulator by hand.

Prints the API URL, the token and the clone URLs, then serves until Ctrl-C or SIGTERM.
The token is printed on purpose: it is a throw-away credential of a local fake.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from cgr_discovery.testing._simulator import GitHubSimulator


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cgr_discovery.testing",
        description="Serve a simulated GitHub (REST API and git over HTTP) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument(
        "--seed", choices=("demo", "empty"), default="demo", help="initial state (default demo)"
    )
    parser.add_argument("--root", type=Path, help="directory for the bare git repositories")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cgr-github-sim-") as tmp:
        root = args.root or Path(tmp)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        with GitHubSimulator(root, port=args.port) as gh:
            repos = [gh.seed_demo()] if args.seed == "demo" else []
            print(f"url: {gh.url}")
            print(f"token: {gh.token}")
            print(f"bot: {gh.bot_login}")
            for repo in repos:
                owner, name = repo.split("/")
                print(f"repo: {repo} {gh.git_url(owner, name)}")
            sys.stdout.flush()
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
