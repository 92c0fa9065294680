"""Fault injection, the primary rate limit, conditional requests and the request log."""

from __future__ import annotations

import time

import httpx
import pytest

from cgr_discovery.testing import GitHubSimulator
from conftest import REPO, Spec

ISSUES = "/repos/acme/widgets/issues"


def test_rate_limit_headers_on_every_response(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    first = raw_api.get("/user")
    second = raw_api.get(ISSUES)
    for response in (first, second):
        assert response.headers["x-ratelimit-limit"] == "5000"
        assert response.headers["x-ratelimit-resource"] == "core"
        assert int(response.headers["x-ratelimit-reset"]) > time.time()
    assert first.headers["x-ratelimit-remaining"] == "4999"
    assert second.headers["x-ratelimit-remaining"] == "4998"
    assert second.headers["x-ratelimit-used"] == "2"
    search = raw_api.get("/search/issues", params={"q": "repo:acme/widgets is:issue"})
    assert search.headers["x-ratelimit-resource"] == "search"
    assert search.headers["x-ratelimit-limit"] == "30"
    assert search.headers["x-ratelimit-remaining"] == "29"
    # /rate_limit itself is free, as on GitHub.
    before = gh.rate_limit()["used"]
    assert raw_api.get("/rate_limit").status_code == 200
    assert gh.rate_limit()["used"] == before


def test_etag_and_304_are_not_counted(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    number = gh.create_issue(REPO, "Cached")
    first = raw_api.get(f"{ISSUES}/{number}")
    etag = first.headers["etag"]
    again = raw_api.get(f"{ISSUES}/{number}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["x-ratelimit-remaining"] == first.headers["x-ratelimit-remaining"]
    gh.advance_clock(2)
    gh.add_labels(REPO, number, "bug")
    changed = raw_api.get(f"{ISSUES}/{number}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    log = gh.requests
    assert [(r.status, r.conditional, r.counted) for r in log] == [
        (200, False, True),
        (304, True, False),
        (200, True, True),
    ]
    assert log[0].method == "GET"
    assert log[0].path == f"{ISSUES}/{number}"
    assert log[0].resource == "core"


def test_request_log_records_query_and_clears(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    raw_api.get(ISSUES, params={"state": "all", "labels": "a b,ü"})
    record = gh.requests[-1]
    assert record.query == {"state": "all", "labels": "a b,ü"}
    assert gh.token not in repr(gh.requests)
    assert gh.token not in repr(gh)
    gh.clear_requests()
    assert gh.requests == []


def test_primary_rate_limit_exhaustion(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    gh.exhaust_rate_limit(reset_in=120)
    refused = raw_api.get("/user")
    assert refused.status_code == 403
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= time.time() + 100
    assert refused.json()["message"].startswith("API rate limit exceeded for user ID")
    assert gh.requests[-1].counted is False
    # The search bucket is separate, and /rate_limit still answers.
    assert raw_api.get("/search/issues", params={"q": "is:issue"}).status_code == 200
    overview = raw_api.get("/rate_limit").json()
    assert overview["resources"]["core"]["remaining"] == 0
    # Once the window has passed, the limit resets.
    gh.advance_clock(121)
    assert raw_api.get("/user").status_code == 200


def test_small_limit_runs_out_by_itself(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    gh.set_rate_limit(3)
    statuses = [raw_api.get("/user").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 403, 403]
    gh.reset_rate_limit()
    assert raw_api.get("/user").status_code == 200


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_per_route(gh: GitHubSimulator, raw_api: httpx.Client, status: int) -> None:
    fault = gh.faults.error(status, path=r"/issues$")
    assert raw_api.get(ISSUES).status_code == status
    assert raw_api.get(ISSUES).status_code == status
    # Other routes are unaffected.
    assert raw_api.get("/user").status_code == 200
    if status == 502:
        assert raw_api.get(ISSUES).headers["content-type"] == "text/html"
    else:
        assert "message" in raw_api.get(ISSUES).json()
    fault.remove()
    assert raw_api.get(ISSUES).status_code == 200
    assert [r.fault for r in gh.requests][:2] == ["error", "error"]
    assert gh.requests[0].status == status
    assert gh.requests[0].counted is False


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit(
    gh: GitHubSimulator, raw_api: httpx.Client, spec: Spec, status: int
) -> None:
    gh.faults.error(status, method="POST", path="/comments", retry_after=7)
    number = gh.create_issue(REPO, "x")
    limited = raw_api.post(f"{ISSUES}/{number}/comments", json={"body": "hi"})
    assert limited.status_code == status
    assert limited.headers["retry-after"] == "7"
    assert "secondary rate limit" in limited.json()["message"]
    spec.check_schema(limited.json(), "basic-error")
    # A GET on the same path is not matched by a POST fault.
    assert raw_api.get(f"{ISSUES}/{number}/comments").status_code == 200
    gh.faults.clear()
    assert raw_api.post(f"{ISSUES}/{number}/comments", json={"body": "hi"}).status_code == 201


def test_secondary_rate_limit_helper_defaults_to_60s(
    gh: GitHubSimulator, raw_api: httpx.Client
) -> None:
    gh.faults.secondary_rate_limit(count=1)
    response = raw_api.get("/user")
    assert (response.status_code, response.headers["retry-after"]) == (403, "60")


def test_one_shot_fault_hits_next_matching_requests_only(
    gh: GitHubSimulator, raw_api: httpx.Client
) -> None:
    fault = gh.faults.error(502, method="GET", path=r"^/repos/acme/widgets$", count=2)
    assert raw_api.get("/user").status_code == 200
    assert raw_api.get("/repos/acme/widgets").status_code == 502
    assert raw_api.get("/repos/acme/widgets").status_code == 502
    assert raw_api.get("/repos/acme/widgets").status_code == 200
    assert fault.hits == 2
    assert gh.faults.active == []


def test_dropped_connection(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    gh.faults.drop_connection(path="/user")
    with pytest.raises(httpx.RemoteProtocolError):
        raw_api.get("/user")
    assert gh.requests[-1].status is None
    assert gh.requests[-1].fault == "drop"
    # One-shot by default: the retry works.
    assert raw_api.get("/user").status_code == 200


def test_latency(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    # 1 s of latency against loopback requests that take milliseconds: the upper bounds
    # hold on a loaded CI machine too (0.3 s was close enough to a stall to flake).
    fault = gh.faults.latency(1.0, path="/user")
    started = time.monotonic()
    assert raw_api.get("/user").status_code == 200
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    assert raw_api.get(ISSUES).status_code == 200
    assert time.monotonic() - started < 1.0
    fault.remove()
    started = time.monotonic()
    raw_api.get("/user")
    assert time.monotonic() - started < 1.0


def test_latency_makes_a_client_time_out(gh: GitHubSimulator) -> None:
    gh.faults.latency(2.0)
    with (
        httpx.Client(base_url=gh.url, headers={"Authorization": f"token {gh.token}"}) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/user", timeout=0.2)
    # close() does not wait out the remaining latency: the fixture tears down at once.


def test_bad_fault_arguments_are_refused(gh: GitHubSimulator) -> None:
    with pytest.raises(ValueError, match="no GitHub fault body for status 404"):
        gh.faults.error(404)
    with pytest.raises(ValueError, match="count must be a positive"):
        gh.faults.error(500, count=0)


def test_drop_after_apply_applies_the_write_and_loses_the_answer(
    gh: GitHubSimulator, raw_api: httpx.Client
) -> None:
    number = gh.create_issue(REPO, "Lost answers")
    comments = f"{ISSUES}/{number}/comments"
    fault = gh.faults.drop_after_apply(method="POST", path=r"/comments$")
    with pytest.raises(httpx.RemoteProtocolError):
        raw_api.post(comments, json={"body": "applied, answer lost"})
    # The comment exists although the client never heard of it.
    assert [c.body for c in gh.comments(REPO, number)] == ["applied, answer lost"]
    record = gh.requests[-1]
    assert (record.status, record.fault, record.applied_status) == (None, "drop_after", 201)
    assert record.counted  # GitHub did the work, so the request cost a point
    assert fault.hits == 1
    assert gh.faults.active == []
    # A GET is not affected by a POST-only fault, and the next POST answers normally.
    listed = raw_api.get(comments)
    assert [c["body"] for c in listed.json()] == ["applied, answer lost"]
    assert raw_api.post(comments, json={"body": "second"}).status_code == 201


def test_drop_before_does_not_apply(gh: GitHubSimulator, raw_api: httpx.Client) -> None:
    number = gh.create_issue(REPO, "Dropped before")
    gh.faults.drop_connection(method="POST", path=r"/labels$")
    with pytest.raises(httpx.RemoteProtocolError):
        raw_api.post(f"{ISSUES}/{number}/labels", json={"labels": ["bug"]})
    assert gh.issue(REPO, number).labels == []
    gh.faults.drop_after_apply(method="POST", path=r"/labels$")
    with pytest.raises(httpx.RemoteProtocolError):
        raw_api.post(f"{ISSUES}/{number}/labels", json={"labels": ["bug"]})
    assert gh.issue(REPO, number).labels == ["bug"]
    assert [(r.fault, r.applied_status) for r in gh.requests[-2:]] == [
        ("drop", None),
        ("drop_after", 200),
    ]
