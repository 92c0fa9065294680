"""JSON shapes exactly as GitHub's REST API v3 returns them (checked against its OpenAPI).

Every function is called with ``Model.lock`` held and returns fresh plain data.
"""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import quote

from cgr_discovery.testing import _git
from cgr_discovery.testing._model import (
    LEGACY_PERMISSION,
    REACTIONS,
    Comment,
    Issue,
    IssueEvent,
    Label,
    Model,
    Reaction,
    Repo,
    ReviewComment,
    User,
)

JSON = dict[str, Any]
DOCS = "https://docs.github.com/rest"


def iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def node_id(kind: str, id_: int) -> str:
    # GitHub's node ids are opaque base64 strings; this keeps them unique and stable.
    return base64.b64encode(f"0:{kind}{id_}".encode()).decode().rstrip("=")


class Renderer:
    def __init__(self, model: Model, base_url: str) -> None:
        self.model = model
        self.api = base_url
        self.web = base_url

    # -- users --------------------------------------------------------------------------

    def git_ref(self, repo: Repo, ref: str, sha: str) -> JSON:
        """A reference as ``GET /repos/{owner}/{repo}/git/matching-refs/{ref}`` lists it."""
        api_repo = f"{self.api}/repos/{repo.full_name}"
        return {
            "ref": ref,
            "node_id": base64.b64encode(f"0:Ref{repo.id}:{ref}".encode()).decode().rstrip("="),
            "url": f"{api_repo}/git/{ref}",
            "object": {"sha": sha, "type": "commit", "url": f"{api_repo}/git/commits/{sha}"},
        }

    def user(self, user: User) -> JSON:
        login = quote(user.login)
        url = f"{self.api}/users/{login}"
        return {
            "login": user.login,
            "id": user.id,
            "node_id": node_id("U", user.id),
            "avatar_url": f"{self.web}/avatars/{login}",
            "gravatar_id": "",
            "url": url,
            "html_url": f"{self.web}/{login}",
            "followers_url": f"{url}/followers",
            "following_url": f"{url}/following{{/other_user}}",
            "gists_url": f"{url}/gists{{/gist_id}}",
            "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{url}/subscriptions",
            "organizations_url": f"{url}/orgs",
            "repos_url": f"{url}/repos",
            "events_url": f"{url}/events{{/privacy}}",
            "received_events_url": f"{url}/received_events",
            "type": user.type,
            "user_view_type": "public",
            "site_admin": False,
        }

    def login(self, login: str) -> JSON:
        return self.user(self.model.user(login))

    def private_user(self, user: User) -> JSON:
        owned = [r for r in self.model.repos.values() if r.owner.lower() == user.login.lower()]
        return {
            **self.user(user),
            # The OpenAPI discriminator: the authenticated user sees the private view.
            "user_view_type": "private",
            "name": user.name,
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "notification_email": None,
            "public_repos": sum(1 for r in owned if not r.private),
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": iso(user.created_at),
            "updated_at": iso(user.created_at),
            "private_gists": 0,
            "total_private_repos": sum(1 for r in owned if r.private),
            "owned_private_repos": sum(1 for r in owned if r.private),
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": True,
            "plan": {
                "name": "free",
                "space": 976562499,
                "collaborators": 0,
                "private_repos": 10000,
            },
        }

    # -- repositories ---------------------------------------------------------------------

    def repo_urls(self, repo: Repo) -> JSON:
        url = f"{self.api}/repos/{repo.owner}/{repo.name}"
        names = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "hooks_url": "/hooks",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
        }
        return {"url": url, **{key: url + suffix for key, suffix in names.items()}}

    def repo(self, repo: Repo, viewer: str | None = None) -> JSON:
        open_issues = sum(1 for i in repo.issues.values() if i.state == "open")
        html = f"{self.web}/{repo.owner}/{repo.name}"
        data: JSON = {
            "id": repo.id,
            "node_id": node_id("R", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.login(repo.owner),
            "html_url": html,
            "description": repo.description,
            "fork": False,
            **self.repo_urls(repo),
            "created_at": iso(repo.created_at),
            "updated_at": iso(repo.updated_at),
            "pushed_at": iso(repo.pushed_at),
            "git_url": f"git://{self.web.split('://', 1)[-1]}/{repo.full_name}.git",
            "ssh_url": f"git@127.0.0.1:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": None,
            "has_issues": True,
            "has_projects": False,
            "has_downloads": True,
            "has_wiki": False,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": open_issues,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "private" if repo.private else "public",
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
            "default_branch": repo.default_branch,
            "network_count": 0,
            "subscribers_count": 0,
        }
        if viewer is not None:
            role = self.model.role(repo, viewer)
            data["permissions"] = {
                "admin": role == "admin",
                "maintain": role in ("admin", "maintain"),
                "push": role in ("admin", "maintain", "write"),
                "triage": role in ("admin", "maintain", "write", "triage"),
                "pull": role is not None or not repo.private,
            }
        return data

    def permission(self, repo: Repo, login: str) -> JSON:
        role = self.model.role(repo, login)
        if role is None:
            # Anyone can read a public repository; nobody else can read a private one.
            permission = role_name = "none" if repo.private else "read"
        else:
            permission, role_name = LEGACY_PERMISSION[role], role
        user = {
            **self.login(login),
            "permissions": {
                "admin": role == "admin",
                "maintain": role in ("admin", "maintain"),
                "push": role in ("admin", "maintain", "write"),
                "triage": role in ("admin", "maintain", "write", "triage"),
                "pull": permission != "none",
            },
            "role_name": role_name,
        }
        return {"permission": permission, "role_name": role_name, "user": user}

    def label(self, repo: Repo, label: Label) -> JSON:
        return {
            "id": label.id,
            "node_id": node_id("LA", label.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{quote(label.name, safe='')}",
            "name": label.name,
            "color": label.color,
            "default": label.default,
            "description": label.description,
        }

    # -- issues -----------------------------------------------------------------------------

    def issue_event(self, repo: Repo, event: IssueEvent) -> JSON:
        label = self.model.ensure_label(repo, event.label)
        return {
            "id": event.id,
            "node_id": node_id("LE", event.id),
            "url": f"{self.api}/repos/{repo.full_name}/issues/events/{event.id}",
            "actor": self.user(self.model.user(event.actor)),
            "event": event.event,
            "commit_id": None,
            "commit_url": None,
            "created_at": iso(event.created_at),
            "performed_via_github_app": None,
            "label": {"name": label.name, "color": label.color},
        }

    def reactions(self, url: str, reactions: list[Reaction]) -> JSON:
        counts = {content: 0 for content in REACTIONS}
        for reaction in reactions:
            counts[reaction.content] += 1
        return {"url": url, "total_count": len(reactions), **counts}

    def reaction(self, reaction: Reaction) -> JSON:
        return {
            "id": reaction.id,
            "node_id": node_id("REA", reaction.id),
            "user": self.login(reaction.user),
            "content": reaction.content,
            "created_at": iso(reaction.created_at),
        }

    def issue(self, repo: Repo, issue: Issue) -> JSON:
        api_repo = f"{self.api}/repos/{repo.full_name}"
        url = f"{api_repo}/issues/{issue.number}"
        kind = "pull" if issue.pull is not None else "issues"
        html = f"{self.web}/{repo.full_name}/{kind}/{issue.number}"
        assignees = [self.login(login) for login in issue.assignees]
        data: JSON = {
            "url": url,
            "repository_url": api_repo,
            "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments",
            "events_url": f"{url}/events",
            "html_url": html,
            "id": issue.id,
            "node_id": node_id("I", issue.id),
            "number": issue.number,
            "title": issue.title,
            "user": self.login(issue.user),
            "labels": [self.label(repo, self.model.ensure_label(repo, n)) for n in issue.labels],
            "state": issue.state,
            "locked": issue.locked,
            "assignee": assignees[0] if assignees else None,
            "assignees": assignees,
            "milestone": None,
            "comments": sum(1 for c in repo.comments.values() if c.number == issue.number),
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_at": iso(issue.closed_at),
            "author_association": self.model.association(repo, issue.user),
            "active_lock_reason": None,
            "body": issue.body,
            "closed_by": self.login(issue.closed_by) if issue.closed_by else None,
            "reactions": self.reactions(f"{url}/reactions", issue.reactions),
            "timeline_url": f"{url}/timeline",
            "performed_via_github_app": None,
            "state_reason": issue.state_reason,
        }
        if issue.pull is not None:
            pulls = f"{api_repo}/pulls/{issue.number}"
            data["draft"] = issue.pull.draft
            data["pull_request"] = {
                "url": pulls,
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": iso(issue.pull.merged_at),
            }
        return data

    def comment(self, repo: Repo, comment: Comment) -> JSON:
        url = f"{self.api}/repos/{repo.full_name}/issues/comments/{comment.id}"
        issue = repo.issues[comment.number]
        kind = "pull" if issue.pull is not None else "issues"
        return {
            "url": url,
            "html_url": (
                f"{self.web}/{repo.full_name}/{kind}/{comment.number}#issuecomment-{comment.id}"
            ),
            "issue_url": f"{self.api}/repos/{repo.full_name}/issues/{comment.number}",
            "id": comment.id,
            "node_id": node_id("IC", comment.id),
            "user": self.login(comment.user),
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "author_association": self.model.association(repo, comment.user),
            "body": comment.body,
            "reactions": self.reactions(f"{url}/reactions", comment.reactions),
            "performed_via_github_app": None,
        }

    # -- pull requests ------------------------------------------------------------------------

    def _ref(self, repo: Repo, ref: str, sha: str) -> JSON:
        return {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self.login(repo.owner),
            "repo": self.repo(repo),
        }

    def pull(self, repo: Repo, issue: Issue, heads: dict[str, str], *, full: bool = False) -> JSON:
        pull = issue.pull
        if pull is None:
            raise ValueError(f"#{issue.number} in {repo.full_name} is not a pull request")
        # The head sha is read from the real git repository, so a push moves it; a deleted
        # branch keeps the last sha seen, as GitHub does for closed pull requests.
        if pull.head_ref in heads and pull.merged_at is None:
            pull.head_sha = heads[pull.head_ref]
        if pull.base_ref in heads and pull.merged_at is None:
            pull.base_sha = heads[pull.base_ref]
        api_repo = f"{self.api}/repos/{repo.full_name}"
        url = f"{api_repo}/pulls/{issue.number}"
        html = f"{self.web}/{repo.full_name}/pull/{issue.number}"
        issue_url = f"{api_repo}/issues/{issue.number}"
        assignees = [self.login(login) for login in issue.assignees]
        data: JSON = {
            "url": url,
            "id": issue.pull_id,
            "node_id": node_id("PR", issue.pull_id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": issue_url,
            "commits_url": f"{url}/commits",
            "review_comments_url": f"{url}/comments",
            "review_comment_url": f"{api_repo}/pulls/comments{{/number}}",
            "comments_url": f"{issue_url}/comments",
            "statuses_url": f"{api_repo}/statuses/{pull.head_sha}",
            "number": issue.number,
            "state": issue.state,
            "locked": issue.locked,
            "title": issue.title,
            "user": self.login(issue.user),
            "body": issue.body,
            "labels": [self.label(repo, self.model.ensure_label(repo, n)) for n in issue.labels],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": iso(issue.created_at),
            "updated_at": iso(issue.updated_at),
            "closed_at": iso(issue.closed_at),
            "merged_at": iso(pull.merged_at),
            "merge_commit_sha": pull.merge_commit_sha,
            "assignee": assignees[0] if assignees else None,
            "assignees": assignees,
            "requested_reviewers": [],
            "requested_teams": [],
            "head": self._ref(repo, pull.head_ref, pull.head_sha),
            "base": self._ref(repo, pull.base_ref, pull.base_sha),
            "_links": {
                "self": {"href": url},
                "html": {"href": html},
                "issue": {"href": issue_url},
                "comments": {"href": f"{issue_url}/comments"},
                "review_comments": {"href": f"{url}/comments"},
                "review_comment": {"href": f"{api_repo}/pulls/comments{{/number}}"},
                "commits": {"href": f"{url}/commits"},
                "statuses": {"href": f"{api_repo}/statuses/{pull.head_sha}"},
            },
            "author_association": self.model.association(repo, issue.user),
            "auto_merge": None,
            "draft": pull.draft,
        }
        if full:
            commits = _git.count_commits(repo.git_dir, pull.base_sha, pull.head_sha)
            stat = _git.diff_stat(repo.git_dir, pull.base_sha, pull.head_sha)
            data.update(
                {
                    "merged": pull.merged_at is not None,
                    "mergeable": True if issue.state == "open" else None,
                    "rebaseable": True if issue.state == "open" else None,
                    "mergeable_state": "clean" if issue.state == "open" else "unknown",
                    "merged_by": self.login(pull.merged_by) if pull.merged_by else None,
                    "comments": sum(1 for c in repo.comments.values() if c.number == issue.number),
                    "review_comments": sum(
                        1 for c in repo.review_comments.values() if c.number == issue.number
                    ),
                    "maintainer_can_modify": False,
                    "commits": commits,
                    "additions": stat.additions,
                    "deletions": stat.deletions,
                    "changed_files": stat.changed_files,
                }
            )
        return data

    def review_comment(self, repo: Repo, comment: ReviewComment) -> JSON:
        api_repo = f"{self.api}/repos/{repo.full_name}"
        url = f"{api_repo}/pulls/comments/{comment.id}"
        html = f"{self.web}/{repo.full_name}/pull/{comment.number}#discussion_r{comment.id}"
        pull_url = f"{api_repo}/pulls/{comment.number}"
        data: JSON = {
            "url": url,
            "pull_request_review_id": comment.review_id,
            "id": comment.id,
            "node_id": node_id("PRRC", comment.id),
            "diff_hunk": comment.diff_hunk,
            "path": comment.path,
            "position": comment.line,
            "original_position": comment.line,
            "commit_id": comment.commit_id,
            "original_commit_id": comment.original_commit_id,
            "user": self.login(comment.user),
            "body": comment.body,
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "html_url": html,
            "pull_request_url": pull_url,
            "author_association": self.model.association(repo, comment.user),
            "_links": {
                "self": {"href": url},
                "html": {"href": html},
                "pull_request": {"href": pull_url},
            },
            "reactions": self.reactions(f"{url}/reactions", comment.reactions),
            "start_line": None,
            "original_start_line": None,
            "start_side": None,
            "line": comment.line,
            "original_line": comment.line,
            "side": comment.side,
            "subject_type": "line",
        }
        if comment.in_reply_to_id is not None:
            data["in_reply_to_id"] = comment.in_reply_to_id
        return data
