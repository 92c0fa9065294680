"""Every endpoint the simulator serves, checked against GitHub's OpenAPI description.

The ``api`` fixture validates each real HTTP response (status, headers, JSON body) with
openapi-core against the operation it belongs to; this test drives every endpoint through
its success and error answers and then checks that none was left out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cgr_discovery.testing import GitHubSimulator
from conftest import REPO, Spec

R = "/repos/{owner}/{repo}"
# (method, OpenAPI path template, status) of every answer that must have been validated.
EXPECTED = {
    ("GET", "/user", 200),
    ("GET", "/rate_limit", 200),
    ("GET", "/search/issues", 200),
    ("GET", "/search/issues", 422),
    ("GET", R, 200),
    ("GET", R, 404),
    ("GET", R + "/collaborators/{username}/permission", 200),
    ("GET", R + "/collaborators/{username}/permission", 404),
    ("GET", R + "/labels", 200),
    ("POST", R + "/labels", 201),
    ("POST", R + "/labels", 422),
    ("GET", R + "/labels/{name}", 200),
    ("GET", R + "/labels/{name}", 404),
    ("GET", R + "/git/matching-refs/{ref}", 200),
    ("GET", R + "/issues", 200),
    ("GET", R + "/issues", 304),
    ("POST", R + "/issues", 201),
    ("POST", R + "/issues", 422),
    ("GET", R + "/issues/{issue_number}", 200),
    ("GET", R + "/issues/{issue_number}", 404),
    ("PATCH", R + "/issues/{issue_number}", 200),
    ("PATCH", R + "/issues/{issue_number}", 422),
    ("GET", R + "/issues/comments", 200),
    ("GET", R + "/issues/comments/{comment_id}", 200),
    ("GET", R + "/issues/comments/{comment_id}", 404),
    ("PATCH", R + "/issues/comments/{comment_id}", 200),
    ("DELETE", R + "/issues/comments/{comment_id}", 204),
    ("GET", R + "/issues/{issue_number}/comments", 200),
    ("POST", R + "/issues/{issue_number}/comments", 201),
    ("POST", R + "/issues/{issue_number}/comments", 422),
    ("GET", R + "/issues/{issue_number}/labels", 200),
    ("POST", R + "/issues/{issue_number}/labels", 200),
    ("PUT", R + "/issues/{issue_number}/labels", 200),
    ("DELETE", R + "/issues/{issue_number}/labels/{name}", 200),
    ("DELETE", R + "/issues/{issue_number}/labels/{name}", 404),
    ("POST", R + "/issues/{issue_number}/assignees", 201),
    ("DELETE", R + "/issues/{issue_number}/assignees", 200),
    ("GET", R + "/issues/{issue_number}/reactions", 200),
    ("POST", R + "/issues/{issue_number}/reactions", 201),
    ("POST", R + "/issues/{issue_number}/reactions", 200),
    ("POST", R + "/issues/{issue_number}/reactions", 422),
    ("GET", R + "/issues/comments/{comment_id}/reactions", 200),
    ("POST", R + "/issues/comments/{comment_id}/reactions", 201),
    ("POST", R + "/issues/comments/{comment_id}/reactions", 200),
    ("GET", R + "/pulls/comments/{comment_id}/reactions", 200),
    ("DELETE", R + "/issues/{issue_number}/reactions/{reaction_id}", 204),
    ("DELETE", R + "/issues/comments/{comment_id}/reactions/{reaction_id}", 204),
    ("DELETE", R + "/pulls/comments/{comment_id}/reactions/{reaction_id}", 204),
    ("POST", R + "/pulls/comments/{comment_id}/reactions", 201),
    ("POST", R + "/pulls/comments/{comment_id}/reactions", 200),
    ("GET", R + "/pulls", 200),
    ("POST", R + "/pulls", 201),
    ("POST", R + "/pulls", 422),
    ("GET", R + "/pulls/{pull_number}", 200),
    ("GET", R + "/pulls/{pull_number}", 404),
    ("PATCH", R + "/pulls/{pull_number}", 200),
    ("PATCH", R + "/pulls/{pull_number}", 422),
    ("GET", R + "/pulls/comments", 200),
    ("GET", R + "/pulls/comments/{comment_id}", 200),
    ("GET", R + "/pulls/{pull_number}/comments", 200),
    ("POST", R + "/pulls/{pull_number}/comments/{comment_id}/replies", 201),
    ("POST", R + "/pulls/{pull_number}/comments/{comment_id}/replies", 404),
}


def _status(response: httpx.Response, status: int) -> httpx.Response:
    assert response.status_code == status, (response.request.url, response.text)
    return response


def test_every_endpoint_conforms_to_githubs_openapi(
    gh: GitHubSimulator, api: httpx.Client, raw_api: httpx.Client, spec: Spec
) -> None:
    spec.checked.clear()
    r = "/repos/acme/widgets"
    gh.add_collaborator(REPO, "alice", role="admin")
    gh.add_user("mallory")
    gh.add_bot("helper-app[bot]")
    ready = gh.seed_ready_issues(REPO, 3)
    gh.seed_outsider_mention(REPO)
    gh.seed_bot_mention(REPO)
    pr, review_comment = gh.seed_bot_pull_request(REPO)

    _status(api.get("/user"), 200)
    _status(api.get("/rate_limit"), 200)
    found = _status(
        api.get("/search/issues", params={"q": "repo:acme/widgets is:issue is:open label:ready"}),
        200,
    ).json()
    assert [item["number"] for item in found["items"]] == sorted(ready, reverse=True)
    _status(api.get("/search/issues", params={"q": "repo:nobody/nothing is:issue"}), 422)
    _status(api.get(r), 200)
    _status(api.get("/repos/acme/missing"), 404)
    _status(api.get(f"{r}/collaborators/alice/permission"), 200)
    _status(api.get(f"{r}/collaborators/mallory/permission"), 200)
    _status(api.get(f"{r}/collaborators/nobody-at-all/permission"), 404)

    _status(api.get(f"{r}/labels"), 200)
    _status(api.post(f"{r}/labels", json={"name": "in-progress", "color": "fbca04"}), 201)
    _status(api.post(f"{r}/labels", json={"name": "In-Progress"}), 422)
    _status(api.get(f"{r}/labels/in-progress"), 200)
    _status(api.get(f"{r}/labels/nope"), 404)

    gh.commit(REPO, "cgr/7-a", {"a.txt": "a\n"}, start_point="main")
    # The ref as one path segment: the spec's template has {ref} (GitHub takes both).
    refs = _status(api.get(f"{r}/git/matching-refs/heads%2Fcgr%2F7-"), 200).json()
    assert [ref["ref"] for ref in refs] == ["refs/heads/cgr/7-a"]
    assert _status(api.get(f"{r}/git/matching-refs/heads%2Fnone"), 200).json() == []

    listed = _status(api.get(f"{r}/issues", params={"state": "all", "per_page": 2}), 200)
    _status(
        api.get(
            f"{r}/issues",
            params={"state": "all", "per_page": 2},
            headers={"If-None-Match": listed.headers["etag"]},
        ),
        304,
    )
    created = _status(api.post(f"{r}/issues", json={"title": "New", "body": "text"}), 201).json()
    _status(api.post(f"{r}/issues", json={"body": "no title"}), 422)
    number = created["number"]
    _status(api.get(f"{r}/issues/{number}"), 200)
    _status(api.get(f"{r}/issues/9999"), 404)
    _status(api.patch(f"{r}/issues/{number}", json={"title": "Renamed"}), 200)
    _status(api.patch(f"{r}/issues/{number}", json={"state": "sideways"}), 422)
    closed = _status(api.patch(f"{r}/issues/{number}", json={"state": "closed"}), 200).json()
    assert closed["state_reason"] == "completed"

    _status(api.get(f"{r}/issues/comments"), 200)
    comment = _status(
        api.post(f"{r}/issues/{ready[0]}/comments", json={"body": "Working on it"}), 201
    ).json()
    _status(api.post(f"{r}/issues/{ready[0]}/comments", json={}), 422)
    _status(api.get(f"{r}/issues/{ready[0]}/comments"), 200)
    _status(api.get(f"{r}/issues/comments/{comment['id']}"), 200)
    _status(api.get(f"{r}/issues/comments/123456789"), 404)
    _status(api.patch(f"{r}/issues/comments/{comment['id']}", json={"body": "Done"}), 200)

    _status(api.get(f"{r}/issues/{ready[0]}/labels"), 200)
    _status(api.post(f"{r}/issues/{ready[0]}/labels", json={"labels": ["in-progress"]}), 200)
    _status(api.put(f"{r}/issues/{ready[1]}/labels", json={"labels": ["ready", "bug"]}), 200)
    _status(api.delete(f"{r}/issues/{ready[0]}/labels/ready"), 200)
    _status(api.delete(f"{r}/issues/{ready[0]}/labels/ready"), 404)
    _status(api.post(f"{r}/issues/{ready[0]}/assignees", json={"assignees": ["cgr-bot"]}), 201)
    _status(api.request("DELETE", f"{r}/issues/{ready[0]}/assignees",
                        json={"assignees": ["cgr-bot"]}), 200)  # fmt: skip

    for path in (
        f"{r}/issues/{ready[0]}/reactions",
        f"{r}/issues/comments/{comment['id']}/reactions",
        f"{r}/pulls/comments/{review_comment}/reactions",
    ):
        _status(api.post(path, json={"content": "eyes"}), 201)
        again = _status(api.post(path, json={"content": "eyes"}), 200).json()
        _status(api.get(path), 200)
        _status(api.delete(f"{path}/{again['id']}"), 204)
        _status(api.post(path, json={"content": "eyes"}), 201)
    _status(api.post(f"{r}/issues/{ready[0]}/reactions", json={"content": "meh"}), 422)
    _status(api.delete(f"{r}/issues/comments/{comment['id']}"), 204)

    _status(api.get(f"{r}/pulls", params={"state": "all"}), 200)
    gh.commit(REPO, "feature", {"x.txt": "x\n"})
    _status(api.post(f"{r}/pulls", json={"title": "F", "head": "feature", "base": "main"}), 201)
    _status(api.post(f"{r}/pulls", json={"title": "F", "head": "feature", "base": "main"}), 422)
    _status(api.get(f"{r}/pulls/{pr}"), 200)
    _status(api.get(f"{r}/pulls/{ready[0]}"), 404)
    _status(api.patch(f"{r}/pulls/{pr}", json={"body": "Updated body"}), 200)
    _status(api.patch(f"{r}/pulls/{pr}", json={"state": "merged"}), 422)

    _status(api.get(f"{r}/pulls/comments"), 200)
    _status(api.get(f"{r}/pulls/comments/{review_comment}"), 200)
    _status(api.get(f"{r}/pulls/{pr}/comments"), 200)
    _status(
        api.post(f"{r}/pulls/{pr}/comments/{review_comment}/replies", json={"body": "On it"}), 201
    )
    _status(api.post(f"{r}/pulls/{pr}/comments/999999/replies", json={"body": "x"}), 404)

    # Later states of the same objects: a merged PR, a closed PR seen as an issue, a
    # search hit that is a PR, a reply with in_reply_to_id, the exhausted primary limit.
    gh.merge_pull_request(REPO, pr)
    merged = _status(api.get(f"{r}/pulls/{pr}"), 200).json()
    assert merged["merged_by"]["login"] == "cgr-bot"
    assert _status(api.get(f"{r}/issues/{pr}"), 200).json()["pull_request"]["merged_at"]
    prs = _status(api.get("/search/issues", params={"q": "repo:acme/widgets is:pr"}), 200)
    assert all("pull_request" in item for item in prs.json()["items"])
    replies = _status(api.get(f"{r}/pulls/{pr}/comments"), 200).json()
    assert replies[-1]["in_reply_to_id"] == review_comment
    gh.exhaust_rate_limit()
    # The spec lists no 403 for most operations, though any of them can hit the limit.
    exhausted = raw_api.get(f"{r}/issues/{ready[1]}")
    assert exhausted.status_code == 403
    spec.check_schema(exhausted.json(), "basic-error")

    missing = EXPECTED - spec.checked
    assert not missing, f"endpoints not exercised: {sorted(missing)}"


def test_error_bodies_match_githubs_schemas(
    gh: GitHubSimulator, raw_api: httpx.Client, spec: Spec
) -> None:
    missing_token = raw_api.get("/user", headers={"Authorization": ""})
    assert missing_token.status_code == 401
    assert missing_token.json()["message"] == "Requires authentication"
    spec.check_schema(missing_token.json(), "basic-error")
    wrong = raw_api.get("/user", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.json()["message"] == "Bad credentials"
    spec.check_schema(wrong.json(), "basic-error")
    unprocessable = raw_api.post("/repos/acme/widgets/pulls", json={"title": "x", "head": "nope",
                                                                     "base": "main"})  # fmt: skip
    assert unprocessable.status_code == 422
    spec.check_schema(unprocessable.json(), "validation-error")
    assert unprocessable.json()["errors"] == [
        {"resource": "PullRequest", "field": "head", "code": "invalid"}
    ]


def test_the_conformance_check_rejects_a_wrong_shape(
    gh: GitHubSimulator, raw_api: httpx.Client, spec: Spec
) -> None:
    """The checker is not vacuous: an issue without its required ``number`` fails it."""
    number = gh.create_issue(REPO, "Broken")
    good = raw_api.get(f"/repos/acme/widgets/issues/{number}")
    spec.check_response(good)
    body = good.json()
    del body["number"]
    broken = httpx.Response(200, json=body, request=good.request)
    with pytest.raises(pytest.fail.Exception, match="does not conform"):
        spec.check_response(broken)
    wrong_type = httpx.Response(200, json={**good.json(), "state": 3}, request=good.request)
    with pytest.raises(pytest.fail.Exception, match="does not conform"):
        spec.check_response(wrong_type)


def test_without_the_spec_the_conformance_tests_fail_not_skip(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CGR_GITHUB_OPENAPI"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir",
         str(tmp_path), f"{__file__}::test_error_bodies_match_githubs_schemas"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert "nox -s test-discovery" in proc.stdout
    assert "1 error" in proc.stdout
    assert "skipped" not in proc.stdout
