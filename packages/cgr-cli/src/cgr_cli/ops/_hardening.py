"""Keeping the GitHub token in cgr's process out of reach of the agent's processes.

The agent runs as the same OS user as cgr. Any process of that user may read
``/proc/<pid>/environ`` (and ``/proc/<pid>/mem``) of another, and ``environ`` shows the
environment the process was *started* with: removing ``GH_TOKEN`` from ``os.environ``
afterwards does not clear it. Marking cgr's process non-dumpable makes the kernel refuse
those reads to processes without ``CAP_SYS_PTRACE``. The mark is inherited by forked
children (``cgr tick``/``cgr daemon`` run pipelines in forks) and dropped on ``exec``, so
git and the agent are ordinary processes. A process running as root can still read
everything: for a hard boundary run the agent as another user.
"""

from __future__ import annotations

import ctypes
import sys

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


def _prctl(option: int, arg: int) -> int:
    # The symbols the interpreter is linked with (libc's among them), not
    # ``ctypes.util.find_library``: that imports subprocess, shutil and tempfile and may run
    # ``ldconfig``, a cost every ``cgr`` start would pay.
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, arg, 0, 0, 0))


def make_undumpable() -> bool:
    """Mark this process non-dumpable (Linux); False where that is not possible.

    Side effects, accepted for the token's sake: no core dumps of cgr, and debuggers or
    ``py-spy`` attach to it only as root.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return _prctl(_PR_SET_DUMPABLE, 0) == 0
    except (OSError, AttributeError):
        return False


def is_dumpable() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return _prctl(_PR_GET_DUMPABLE, 0) == 1
