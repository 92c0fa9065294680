"""``cgr completion SHELL``: a completion script generated from cgr's own argparse tree.

shtab walks the parser (every subcommand, option and choice) and prints a static script, so
completion stays in step with the commands and costs nothing at run time: the shell reads
the script, and cgr is never started on a Tab press. shtab is imported here only.
"""

from __future__ import annotations

import argparse
import sys


def completion(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import shtab

    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0
