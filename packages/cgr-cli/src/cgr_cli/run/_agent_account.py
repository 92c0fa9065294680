"""The agent's own account (``agent.sandbox.mode = "user"`` or ``"landlock+user"``).

cgr runs as root and the agent as ``agent.sandbox.user``, an unprivileged account with no
supplementary groups (cgr-exec drops them). That account must reach its checkout, its home
and its temp dir, and nothing else of cgr's. How cgr arranges it:

- The directories above ``paths.workspace_root`` belong to the administrator: cgr never
  changes them. Each must already be searchable by the account (``o+x``, or its owner or
  group); when one is not, the run is refused before the claim with a ``ConfigError``
  naming that directory (``check_reachable``), and ``cgr doctor`` says the same. The same
  holds above ``agent.sandbox.home`` when it is set outside the workspace.
- Below the workspace root the directories are cgr's, created ``0700``. For the run,
  ``hand_over`` gives the account search permission (``o+x``, no listing) on the ones on
  the way to its three places, and the three places themselves (owned by the account,
  ``0700``: no other local user gets in). ``take_back`` closes the target's and the run's
  directories again (``0700``) when the run ends, so the account, which every user-mode
  run shares, cannot reach an earlier run's checkout or transcript later. Runs that work
  at the same time under one account are separated by Landlock (``landlock+user``), not
  by the account.
- The checkout is cloned without hard links in this mode (``Git.clone``): ``chown`` acts
  on inodes, and a hard link shares the mirror's object files with the checkout.
- cgr's own git then works in a checkout owned by another uid: git refuses that
  ("dubious ownership") unless the path is in ``safe.directory``, which cgr grants for
  that one checkout on its own command lines only (``Git.trust``), never globally.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from cgr_cli._errors import ConfigError
from cgr_cli.config._model import Config

USER_MODES = ("user", "landlock+user")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int


def uses_account(config: Config) -> bool:
    return config.agent.sandbox.mode in USER_MODES


def account(user: str) -> Account:
    """The account named ``user``; ConfigError naming ``agent.sandbox.user`` if none."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(
            f"agent.sandbox.user = {user!r}: no such account on this machine; create it "
            "(useradd --system --no-create-home cgr-agent) or choose another",
            key="agent.sandbox.user",
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(
            f"agent.sandbox.user = {user!r} is root (uid 0): choose an unprivileged account",
            key="agent.sandbox.user",
        )
    return Account(user, entry.pw_uid, entry.pw_gid)


def searchable(info: os.stat_result, who: Account) -> bool:
    """``who`` may search (traverse) a directory with this ``stat`` (no ACLs considered:
    a refusal names the directory, so an administrator relying on an ACL sees why)."""
    if info.st_uid == who.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == who.gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _outside_ancestors(path: Path, workspace_root: Path) -> list[Path]:
    """The existing directories from ``/`` down to ``path``'s parent that are not cgr's
    (not the workspace root or below it)."""
    return [
        parent
        for parent in reversed(path.parents)
        if not _within(parent, workspace_root) and parent.is_dir()
    ]


def check_reachable(config: Config) -> None:
    """ConfigError naming the first directory the account cannot search on the way to the
    workspace root (or to ``agent.sandbox.home``); see the module's docstring."""
    if not uses_account(config):
        return
    sandbox = config.agent.sandbox
    who = account(sandbox.user)
    root = Path(os.path.realpath(config.workspace_root))
    targets = [root]
    if sandbox.home:
        targets.append(Path(os.path.realpath(Path(sandbox.home).expanduser())))
    for target in targets:
        for directory in _outside_ancestors(target, root):
            info = directory.stat()
            if not searchable(info, who):
                what = "workspace root" if target == root else "agent.sandbox.home"
                raise ConfigError(
                    f'agent.sandbox.mode = "{sandbox.mode}": the account {who.name!r} '
                    f"cannot reach the {what} {target}: {directory} is not searchable by it "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}); "
                    f"allow it (chmod o+x {directory}) or set paths.workspace_root below "
                    "directories it can search",
                    key="agent.sandbox.mode",
                )


def hand_over(who: Account, places: list[Path], workspace_root: Path) -> None:
    """Give ``who`` its ``places`` (checkout, home, temp dir; they exist): owned by it,
    ``0700``, and search permission on cgr's directories on the way to them."""
    root = Path(os.path.realpath(workspace_root))
    for given in places:
        place = Path(os.path.realpath(given))
        for directory in place.parents:
            if not _within(directory, root):
                break
            info = directory.stat()
            if not searchable(info, who) and info.st_uid == os.geteuid():
                os.chmod(directory, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
        # Every file again before each agent attempt: cgr's git (as root) wrote the index
        # and objects in between. Symlinks are changed themselves, never followed.
        for dirpath, dirnames, filenames in os.walk(place):
            os.chown(dirpath, who.uid, who.gid, follow_symlinks=False)
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), who.uid, who.gid, follow_symlinks=False)
        os.chmod(place, 0o700)


def take_back(places: list[Path], workspace_root: Path) -> None:
    """Close the directories holding ``places`` (those below the workspace root) to the
    account again: ``0700``, as cgr created them."""
    root = Path(os.path.realpath(workspace_root))
    for place in places:
        parent = Path(os.path.realpath(place)).parent
        if parent != root and _within(parent, root) and parent.is_dir():
            os.chmod(parent, 0o700)
