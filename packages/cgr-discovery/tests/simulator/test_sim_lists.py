"""The dated lists (issue comments, review comments; per thread and per repository) share
one filter-and-page helper: the same since / sort / direction / pagination rules for all."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from cgr_discovery.testing import GitHubSimulator
from conftest import REPO

ISSUE_LISTS = ("issue", "repo_issue")
REVIEW_LISTS = ("pull_review", "repo_review")


def _seed(gh: GitHubSimulator, kind: str) -> tuple[str, list[int], bool]:
    """Three items created 10 s apart, the first edited last; (url, ids, sortable)."""
    ids: list[int] = []
    if kind in ISSUE_LISTS:
        number = gh.create_issue(REPO, "t")
        for text in ("one", "two", "three"):
            ids.append(gh.add_comment(REPO, number, text, author="cgr-bot"))
            gh.advance_clock(10)
        gh.edit_comment(REPO, ids[0], "one, edited")
        url = f"/repos/{REPO}/issues/{number}/comments"
        if kind == "repo_issue":
            url = f"/repos/{REPO}/issues/comments"
        # The per-issue list has no sort parameter on GitHub.
        return url, ids, kind == "repo_issue"
    number, first = gh.seed_bot_pull_request(REPO)
    ids.append(first)
    gh.advance_clock(10)
    for text in ("two", "three"):
        ids.append(gh.add_review_comment(REPO, number, text, author="carol", path="src/app.py"))
        gh.advance_clock(10)
    with gh.model.lock:  # edit the first review comment (no helper: GitHub-side edit)
        comment = gh.model.repo(REPO).review_comments[first]
        comment.body = "edited"
        comment.updated_at = gh.model.now()
    url = f"/repos/{REPO}/pulls/{number}/comments"
    if kind == "repo_review":
        url = f"/repos/{REPO}/pulls/comments"
    return url, ids, True


@pytest.mark.parametrize("kind", [*ISSUE_LISTS, *REVIEW_LISTS])
def test_since_sort_direction_and_pages_alike(
    gh: GitHubSimulator, api: httpx.Client, kind: str
) -> None:
    url, ids, sortable = _seed(gh, kind)

    def listed(**params: str | int) -> list[int]:
        response = api.get(url, params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()]

    # No sort: ascending ids, direction ignored.
    assert listed() == ids
    assert listed(direction="desc") == ids
    # since keeps what was updated at or after it: the edited first item and the third.
    repo = gh.model.repo(REPO)
    items = repo.comments if kind in ISSUE_LISTS else repo.review_comments
    third = datetime.fromtimestamp(items[ids[2]].updated_at, UTC)
    assert listed(since=third.isoformat().replace("+00:00", "Z")) == [ids[0], ids[2]]
    if sortable:
        assert listed(sort="created") == ids[::-1]  # descending unless asked
        assert listed(sort="created", direction="asc") == ids
        assert listed(sort="updated", direction="desc") == [ids[0], ids[2], ids[1]]
    else:
        assert listed(sort="updated") == ids  # the per-issue list ignores sort
    # Pages of one, with GitHub's Link header.
    first_page = api.get(url, params={"per_page": 1})
    assert [c["id"] for c in first_page.json()] == ids[:1]
    assert 'rel="next"' in first_page.headers["link"]
    assert 'rel="last"' in first_page.headers["link"]
    assert listed(per_page=1, page=3) == ids[2:]


def test_bad_since_and_sort_are_refused_alike(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    for url in (f"/repos/{REPO}/issues/comments", f"/repos/{REPO}/pulls/comments"):
        assert raw_api.get(url, params={"since": "yesterday"}).status_code == 422
        assert raw_api.get(url, params={"sort": "size"}).status_code == 422
