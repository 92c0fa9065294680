"""``cgr run``: one issue or pull request, from claim to a visible outcome."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cgr_cli.commands._follow import RunFollower
    from cgr_cli.config._model import Config


def run(args: argparse.Namespace) -> int:
    from cgr_cli.config._load import load_config

    # Errors raised here (bad config, GitHub or the database unreachable, an active run on
    # the target) come before the run row exists and go up to `_main`'s boundary; later
    # ones are reported on GitHub and in the summary.
    if args.lease_epoch is not None and args.run_id is None:
        from cgr_cli._errors import UsageError

        raise UsageError("--lease-epoch is for a run a fleet host claimed: give --run-id too")
    config, _ = load_config(args.config)
    picked_up = lost = None
    if args.run_id is not None:
        # A queued run (the daemon's, a tick's) names this process in its row first,
        # before the pipeline and its dependencies are loaded.
        from cgr_cli.run._pick_up import pick_up_queued
        from cgr_store import FencingError

        try:
            picked_up = pick_up_queued(config, args.run_id, lease_epoch=args.lease_epoch)
        except FencingError as exc:
            lost = exc  # another fleet host took the run over before it started here
    from cgr_cli.run._pipeline import RUN_LOG_HANDLERS, RunRequest, lost_before_start, run_sync

    if args.run_id is None:
        # A scheduler (tick, daemon) made these checks before it queued --run-id runs. The
        # agent's --version is asked by the pipeline itself, before the claim.
        from cgr_cli.run._preflight import preflight

        preflight(config, run_agent=False)
    request = RunRequest(
        repo=args.repo,
        number=args.number,
        comment_id=args.comment_id,
        review_comment=args.review_comment,
        run_id=args.run_id,
        force=args.force,
        lease_epoch=args.lease_epoch,
    )
    progress = _Progress(config) if _wants_progress(args) else None
    if progress is not None:
        RUN_LOG_HANDLERS.append(progress)
    try:
        if lost is not None:
            summary = lost_before_start(request, lost)  # nothing done, nothing to report
        else:
            summary = run_sync(config, request, own_process=True, picked_up=picked_up)
    finally:
        if progress is not None:
            RUN_LOG_HANDLERS.remove(progress)
            progress.close()
    if args.json:
        import msgspec

        sys.stdout.write(msgspec.json.format(msgspec.json.encode(summary)).decode() + "\n")
    else:
        print(summary.one_line())
    return summary.exit_code


def _wants_progress(args: argparse.Namespace) -> bool:
    """Progress lines go to a person at a terminal; never into --json, a pipe or a log."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) and not args.json and not getattr(args, "quiet", False)


class _Progress(logging.Handler):
    """Shows a `cgr run` as it goes, on stderr: each line of the run's own log, and the
    agent's activity (tools, text, cost so far) from a thread that follows its stream."""

    def __init__(self, config: Config) -> None:
        super().__init__(logging.INFO)
        self._config = config
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._follower: RunFollower | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._thread is None:
            from cgr_cli.commands._follow import RunFollower

            # The pipeline's logger is `cgr.run.<run id>`: the run is known from here on.
            run_id = record.name.rsplit(".", 1)[-1]
            self._follower = RunFollower(self._config, run_id, run_log=False)
            self._thread = threading.Thread(target=self._follow, name="cgr-progress", daemon=True)
            self._thread.start()
        self._write(f"cgr: {record.getMessage()}")

    def _write(self, line: str) -> None:
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            self._stop.set()  # the terminal went away; the run goes on

    def _follow(self) -> None:
        while not self._stop.wait(0.3):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        if self._follower is not None:
            for line in self._follower.poll():
                self._write(line)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        super().close()
