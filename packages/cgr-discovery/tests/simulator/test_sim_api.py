"""Behaviour of the simulated REST endpoints (responses also checked against the spec)."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from cgr_discovery.testing import (
    GitHubSimulator,
    SimulatorError,
    UnknownItemError,
    UnknownRepositoryError,
    UnknownUserError,
)
from conftest import REPO

R = "/repos/acme/widgets"


def _numbers(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["number"] for item in response.json()]


def test_authenticated_user_and_repository(gh: GitHubSimulator, api: httpx.Client) -> None:
    user = api.get("/user").json()
    assert (user["login"], user["type"]) == ("cgr-bot", "User")
    repo = api.get(R).json()
    assert repo["full_name"] == REPO
    assert repo["default_branch"] == "main"
    assert repo["permissions"]["push"] is True
    assert repo["clone_url"] == gh.git_url("acme", "widgets")
    assert gh.branches(REPO).keys() == {"main"}
    # Bearer works as well as "token".
    bearer = api.get("/user", headers={"Authorization": f"Bearer {gh.token}"})
    assert bearer.status_code == 200


def test_private_repository_is_404_for_outsiders(gh: GitHubSimulator, api: httpx.Client) -> None:
    gh.create_repo("acme/secret", private=True, bot_role=None)
    assert api.get("/repos/acme/secret").status_code == 404
    gh.add_collaborator("acme/secret", "cgr-bot", role="read")
    assert api.get("/repos/acme/secret").status_code == 200


def test_issue_list_filters_sorting_and_pagination(gh: GitHubSimulator, api: httpx.Client) -> None:
    gh.add_collaborator(REPO, "alice")
    one = gh.create_issue(REPO, "one", labels=["ready", "bug"])
    gh.advance_clock(10)
    two = gh.create_issue(REPO, "two", labels=["ready"], assignees=["alice"])
    gh.advance_clock(10)
    three = gh.create_issue(REPO, "three", labels=["Bug"])
    gh.advance_clock(10)
    gh.close_issue(REPO, three)
    gh.commit(REPO, "pr-branch", {"f": "x"})
    pr = gh.create_pull_request(REPO, "pr-branch", "a PR")

    assert _numbers(api.get(f"{R}/issues")) == [pr, two, one]
    assert _numbers(api.get(f"{R}/issues", params={"state": "closed"})) == [three]
    assert _numbers(api.get(f"{R}/issues", params={"direction": "asc"})) == [one, two, pr]
    # Labels: comma list, all must match, case-insensitive.
    assert _numbers(api.get(f"{R}/issues", params={"labels": "ready,bug"})) == [one]
    assert _numbers(api.get(f"{R}/issues", params={"labels": "bug", "state": "all"})) == [
        three,
        one,
    ]
    assert _numbers(api.get(f"{R}/issues", params={"assignee": "none"})) == [pr, one]
    assert _numbers(api.get(f"{R}/issues", params={"assignee": "alice"})) == [two]
    # Pull requests are in the issue list with a pull_request key.
    listed = {i["number"]: i for i in api.get(f"{R}/issues").json()}
    assert "pull_request" in listed[pr]
    assert "pull_request" not in listed[one]

    # since: updated at or after; a comment bumps updated_at.
    gh.advance_clock(10)
    gh.add_comment(REPO, one, "bump", author="alice")
    since = api.get(f"{R}/issues/{one}").json()["updated_at"]
    assert _numbers(api.get(f"{R}/issues", params={"since": since})) == [one]
    assert _numbers(api.get(f"{R}/issues", params={"sort": "updated"})) == [one, pr, two]
    assert _numbers(api.get(f"{R}/issues", params={"sort": "comments"}))[0] == one

    first = api.get(f"{R}/issues", params={"state": "all", "per_page": 2})
    assert _numbers(first) == [pr, three]
    link = first.headers["link"]
    assert 'rel="next"' in link
    assert 'rel="last"' in link
    assert "page=2" in link
    second = api.get(f"{R}/issues", params={"state": "all", "per_page": 2, "page": 2})
    assert _numbers(second) == [two, one]
    assert 'rel="prev"' in second.headers["link"]
    assert 'rel="next"' not in second.headers["link"]
    assert api.get(f"{R}/issues", params={"state": "weird"}).status_code == 422


def test_issue_comments_and_repo_wide_comments(gh: GitHubSimulator, api: httpx.Client) -> None:
    gh.add_collaborator(REPO, "bob")
    number = gh.create_issue(REPO, "talk")
    other = gh.create_issue(REPO, "other")
    first = gh.add_comment(REPO, number, "first", author="bob")
    gh.advance_clock(5)
    second = gh.add_comment(REPO, other, "second", author="bob")
    gh.advance_clock(5)
    gh.edit_comment(REPO, first, "first, edited")

    ids = [c["id"] for c in api.get(f"{R}/issues/comments").json()]
    assert ids == [first, second]
    by_update = api.get(f"{R}/issues/comments", params={"sort": "updated", "direction": "desc"})
    assert [c["id"] for c in by_update.json()] == [first, second]
    edited = api.get(f"{R}/issues/comments/{first}").json()
    assert edited["body"] == "first, edited"
    assert edited["updated_at"] > edited["created_at"]
    recent = api.get(f"{R}/issues/comments", params={"since": edited["updated_at"]})
    assert [c["id"] for c in recent.json()] == [first]

    created = api.post(f"{R}/issues/{number}/comments", json={"body": "from the bot"})
    assert created.status_code == 201
    assert created.json()["user"]["login"] == "cgr-bot"
    assert created.json()["author_association"] == "COLLABORATOR"
    assert [c["body"] for c in api.get(f"{R}/issues/{number}/comments").json()] == [
        "first, edited",
        "from the bot",
    ]
    patched = api.patch(f"{R}/issues/comments/{created.json()['id']}", json={"body": "new"})
    assert patched.json()["body"] == "new"
    assert api.get(f"{R}/issues/{number}").json()["comments"] == 2


@pytest.mark.parametrize("name", ["ready", "needs human", "größe ✓", "a/b"])
def test_labels_add_and_remove_with_encoded_names(
    gh: GitHubSimulator, api: httpx.Client, name: str
) -> None:
    number = gh.create_issue(REPO, "labels")
    before = gh.issue(REPO, number).updated_at
    gh.advance_clock(3)
    added = api.post(f"{R}/issues/{number}/labels", json={"labels": [name, "other"]})
    assert [label["name"] for label in added.json()] == [name, "other"]
    assert gh.issue(REPO, number).updated_at > before
    removed = api.delete(f"{R}/issues/{number}/labels/{quote(name, safe='')}")
    assert removed.status_code == 200
    assert [label["name"] for label in removed.json()] == ["other"]
    again = api.delete(f"{R}/issues/{number}/labels/{quote(name, safe='')}")
    assert again.status_code == 404
    assert again.json()["message"] == "Label does not exist"
    # A bare list is accepted as well, like GitHub does.
    assert api.post(f"{R}/issues/{number}/labels", json=[name]).status_code == 200
    assert gh.issue(REPO, number).labels == ["other", name]


def test_repo_labels(gh: GitHubSimulator, api: httpx.Client) -> None:
    created = api.post(f"{R}/labels", json={"name": "in progress", "color": "#FBCA04",
                                           "description": "cgr is on it"})  # fmt: skip
    assert created.status_code == 201
    assert created.json()["color"] == "fbca04"
    names = [label["name"] for label in api.get(f"{R}/labels").json()]
    assert names == ["in progress", "ready"]
    duplicate = api.post(f"{R}/labels", json={"name": "READY"})
    assert duplicate.status_code == 422
    assert duplicate.json()["errors"][0]["code"] == "already_exists"
    assert api.get(f"{R}/labels/{quote('in progress')}").json()["description"] == "cgr is on it"


def test_assignees(gh: GitHubSimulator, api: httpx.Client) -> None:
    gh.add_user("outsider")
    number = gh.create_issue(REPO, "assign me")
    added = api.post(f"{R}/issues/{number}/assignees", json={"assignees": ["cgr-bot", "outsider"]})
    assert added.status_code == 201
    # Like GitHub, someone without access is silently not assigned.
    assert [a["login"] for a in added.json()["assignees"]] == ["cgr-bot"]
    removed = api.request(
        "DELETE", f"{R}/issues/{number}/assignees", json={"assignees": ["cgr-bot"]}
    )
    assert removed.json()["assignees"] == []


def test_collaborator_permissions(gh: GitHubSimulator, api: httpx.Client) -> None:
    expected = {
        "admin": ("admin", "admin"),
        "maintain": ("write", "maintain"),
        "write": ("write", "write"),
        "triage": ("read", "triage"),
        "read": ("read", "read"),
    }
    for role in expected:
        gh.add_collaborator(REPO, f"user-{role}", role=role)  # type: ignore[arg-type]
    for role, (permission, role_name) in expected.items():
        body = api.get(f"{R}/collaborators/user-{role}/permission").json()
        assert (body["permission"], body["role_name"]) == (permission, role_name)
    gh.add_user("stranger")
    stranger = api.get(f"{R}/collaborators/stranger/permission").json()
    assert stranger["permission"] == "read"  # a public repository
    owner = api.get(f"{R}/collaborators/acme/permission").json()
    assert owner["permission"] == "admin"


def test_reactions_201_then_200(gh: GitHubSimulator, api: httpx.Client) -> None:
    number, comment_id = gh.seed_collaborator_mention(REPO)
    path = f"{R}/issues/comments/{comment_id}/reactions"
    first = api.post(path, json={"content": "+1"})
    second = api.post(path, json={"content": "+1"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert api.post(path, json={"content": "rocket"}).status_code == 201
    rollup = api.get(f"{R}/issues/comments/{comment_id}").json()["reactions"]
    assert (rollup["total_count"], rollup["+1"], rollup["rocket"]) == (2, 1, 1)
    assert [r.content for r in gh.reactions(REPO, comment_id=comment_id)] == ["+1", "rocket"]
    assert api.post(f"{R}/issues/{number}/reactions", json={"content": "eyes"}).status_code == 201
    assert (
        api.get(f"{R}/issues/{number}/reactions", params={"content": "eyes"}).json()[0]["user"][
            "login"
        ]
        == "cgr-bot"
    )


def test_pull_requests(gh: GitHubSimulator, api: httpx.Client) -> None:
    sha = gh.commit(REPO, "feature", {"a.txt": "a\n"}, message="Add a")
    missing = api.post(f"{R}/pulls", json={"title": "x", "head": "nope", "base": "main"})
    assert missing.status_code == 422
    assert missing.json()["message"] == "Validation Failed"
    same = api.post(f"{R}/pulls", json={"title": "x", "head": "main", "base": "main"})
    assert same.status_code == 422
    assert same.json()["errors"][0]["message"] == "No commits between main and main"

    created = api.post(
        f"{R}/pulls",
        json={"title": "Add a", "head": "acme:feature", "base": "main", "body": "b", "draft": True},
    )
    assert created.status_code == 201
    pull = created.json()
    assert pull["head"]["sha"] == sha
    assert pull["draft"] is True
    assert pull["base"]["ref"] == "main"
    assert pull["mergeable_state"] == "clean"
    duplicate = api.post(f"{R}/pulls", json={"title": "x", "head": "feature", "base": "main"})
    assert duplicate.status_code == 422
    assert duplicate.json()["errors"][0]["message"] == (
        "A pull request already exists for acme:feature."
    )

    number = pull["number"]
    by_head = api.get(f"{R}/pulls", params={"head": "acme:feature"})
    assert [p["number"] for p in by_head.json()] == [number]
    assert api.get(f"{R}/pulls", params={"head": "acme:other"}).json() == []

    # A new commit on the branch moves the head sha the API reports.
    newer = gh.commit(REPO, "feature", {"b.txt": "b\n"})
    assert api.get(f"{R}/pulls/{number}").json()["head"]["sha"] == newer
    assert api.get(f"{R}/pulls/{number}").json()["commits"] == 2

    updated = api.patch(f"{R}/pulls/{number}", json={"title": "New title", "state": "closed"})
    assert (updated.json()["title"], updated.json()["state"]) == ("New title", "closed")
    assert api.get(f"{R}/pulls").json() == []
    assert [p["number"] for p in api.get(f"{R}/pulls", params={"state": "closed"}).json()] == [
        number
    ]
    # The issue side of the PR shares the number and state.
    assert api.get(f"{R}/issues/{number}").json()["state"] == "closed"
    reopened = api.patch(f"{R}/pulls/{number}", json={"state": "open"})
    assert reopened.json()["state"] == "open"


def test_issues_and_pulls_share_one_number_sequence(gh: GitHubSimulator) -> None:
    first = gh.create_issue(REPO, "issue")
    gh.commit(REPO, "b", {"x": "y"})
    pr = gh.create_pull_request(REPO, "b", "pr")
    last = gh.create_issue(REPO, "issue 2")
    assert (first, pr, last) == (1, 2, 3)


def test_merge_pull_request(gh: GitHubSimulator, api: httpx.Client) -> None:
    gh.commit(REPO, "feature", {"a.txt": "a\n"})
    number = gh.create_pull_request(REPO, "feature", "Add a")
    sha = gh.merge_pull_request(REPO, number)
    pull = api.get(f"{R}/pulls/{number}").json()
    assert (pull["merged"], pull["state"], pull["merge_commit_sha"]) == (True, "closed", sha)
    assert gh.branches(REPO)["main"] == sha
    assert api.patch(f"{R}/pulls/{number}", json={"state": "open"}).status_code == 422


def test_review_comments(gh: GitHubSimulator, api: httpx.Client) -> None:
    number, first = gh.seed_bot_pull_request(REPO)
    gh.advance_clock(5)
    reply = api.post(f"{R}/pulls/{number}/comments/{first}/replies", json={"body": "Done."})
    assert reply.status_code == 201
    assert reply.json()["in_reply_to_id"] == first
    listed = api.get(f"{R}/pulls/comments").json()
    assert [c["id"] for c in listed] == [first, reply.json()["id"]]
    top = listed[0]
    assert (top["path"], top["line"], top["side"]) == ("src/app.py", 2, "RIGHT")
    assert top["diff_hunk"].startswith("@@")
    assert "return 'hello'" in top["diff_hunk"]
    assert top["user"]["login"] == "carol"
    assert top["author_association"] == "COLLABORATOR"
    assert top["commit_id"] == gh.branches(REPO)["cgr/issue-1"]
    newest_first = api.get(f"{R}/pulls/comments", params={"sort": "created", "direction": "desc"})
    assert [c["id"] for c in newest_first.json()] == [reply.json()["id"], first]
    since = api.get(f"{R}/pulls/comments", params={"since": reply.json()["created_at"]})
    assert [c["id"] for c in since.json()] == [reply.json()["id"]]
    assert [c["id"] for c in api.get(f"{R}/pulls/{number}/comments").json()] == [
        first,
        reply.json()["id"],
    ]


def test_search_ready_issues_and_mentions(gh: GitHubSimulator, api: httpx.Client) -> None:
    ready = gh.seed_ready_issues(REPO, 3)
    gh.close_issue(REPO, ready[0])
    mention_issue, _ = gh.seed_collaborator_mention(REPO)
    outsider_issue, _ = gh.seed_outsider_mention(REPO)
    bot_issue, _ = gh.seed_bot_mention(REPO)
    gh.create_issue(REPO, "no mention", "@cgr-botty is someone else", author="alice")

    def search(q: str) -> list[int]:
        response = api.get("/search/issues", params={"q": q})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total_count"] == len(body["items"])
        assert body["incomplete_results"] is False
        return sorted(item["number"] for item in body["items"])

    assert search("repo:acme/widgets is:issue is:open label:ready") == ready[1:]
    assert search("repo:acme/widgets is:issue label:ready") == ready
    assert search("repo:acme/widgets mentions:cgr-bot") == sorted(
        [mention_issue, outsider_issue, bot_issue]
    )
    assert search("repo:acme/widgets is:issue -label:ready is:open author:bob") == [mention_issue]
    assert search('repo:acme/widgets "Ready issue 2"') == [ready[1]]
    assert search("repo:acme/widgets is:pr") == []
    items = api.get("/search/issues", params={"q": "mentions:cgr-bot"}).json()["items"]
    authors = {i["user"]["login"]: i["author_association"] for i in items}
    assert authors == {"bob": "COLLABORATOR", "mallory": "NONE", "helper-app[bot]": "NONE"}
    assert api.get("/search/issues").status_code == 422


def test_seeds_have_the_right_people(gh: GitHubSimulator, api: httpx.Client) -> None:
    _, bot_comment = gh.seed_bot_mention(REPO)
    _, outsider_comment = gh.seed_outsider_mention(REPO)
    bot = api.get(f"{R}/issues/comments/{bot_comment}").json()
    assert (bot["user"]["type"], bot["author_association"]) == ("Bot", "NONE")
    outsider = api.get(f"{R}/issues/comments/{outsider_comment}").json()
    assert (outsider["user"]["type"], outsider["author_association"]) == ("User", "NONE")
    assert "@cgr-bot" in outsider["body"]
    gh.add_user("dana")
    gh.add_org_member("acme", "dana")
    number = gh.create_issue(REPO, "from a member", author="dana")
    assert api.get(f"{R}/issues/{number}").json()["author_association"] == "MEMBER"
    owner_issue = gh.create_issue(REPO, "from the owner", author="acme")
    assert api.get(f"{R}/issues/{owner_issue}").json()["author_association"] == "OWNER"


def test_helper_errors_name_the_thing_to_fix(gh: GitHubSimulator) -> None:
    with pytest.raises(UnknownRepositoryError, match="create_repo"):
        gh.create_issue("acme/nope", "x")
    with pytest.raises(UnknownUserError, match="'ghost'"):
        gh.create_issue(REPO, "x", author="ghost")
    with pytest.raises(UnknownItemError, match="issue or pull request 42"):
        gh.add_comment(REPO, 42, "x", author="cgr-bot")
    with pytest.raises(SimulatorError, match="owner/name"):
        gh.create_repo("no-slash")
    with pytest.raises(SimulatorError, match="already exists"):
        gh.create_repo(REPO)
    with pytest.raises(SimulatorError, match="No commits between"):
        gh.create_pull_request(REPO, "main", "nothing")


def test_basic_auth_and_date_header_follow_the_clock(
    gh: GitHubSimulator, api: httpx.Client
) -> None:
    import base64
    from email.utils import parsedate_to_datetime

    basic = base64.b64encode(f"x-access-token:{gh.token}".encode()).decode()
    assert api.get("/user", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    before = parsedate_to_datetime(api.get("/user").headers["date"]).timestamp()
    gh.advance_clock(3600)
    after = api.get("/user")
    assert parsedate_to_datetime(after.headers["date"]).timestamp() >= before + 3600
    assert int(after.headers["x-ratelimit-reset"]) > before + 3600


def test_issue_events_record_who_labelled(
    gh: GitHubSimulator, api: httpx.Client, raw_api: httpx.Client
) -> None:
    gh.add_collaborator(REPO, "maint", role="maintain")
    gh.add_user("mallory")
    number = gh.create_issue(REPO, "t", author="mallory", labels=["bug"])
    gh.advance_clock(5)
    gh.add_labels(REPO, number, "ready", actor="maint")
    maint = httpx.Client(
        base_url=gh.url, headers={"Authorization": f"token {gh.token_for('maint')}"}
    )
    with maint:
        assert maint.delete(f"/repos/{REPO}/issues/{number}/labels/bug").status_code == 200
        put = maint.put(f"/repos/{REPO}/issues/{number}/labels", json={"labels": ["ready", "docs"]})
        assert put.status_code == 200
    response = api.get(f"/repos/{REPO}/issues/{number}/events")
    assert response.status_code == 200
    events = [(e["event"], e["label"]["name"], e["actor"]["login"]) for e in response.json()]
    assert events == [
        ("labeled", "bug", "mallory"),  # labels given at creation: applied by the author
        ("labeled", "ready", "maint"),
        ("unlabeled", "bug", "maint"),
        ("labeled", "docs", "maint"),  # PUT records only what changed
    ]
    # (GitHub's description lists no 404 for this operation, so unchecked.)
    assert raw_api.get(f"/repos/{REPO}/issues/999/events").status_code == 404
