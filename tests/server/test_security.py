"""Security: the token (401 without, constant-time compare), no file outside the page's own,
the body limit, the per-request caps, and no unauthenticated bind beyond loopback."""

from __future__ import annotations

import http.client
import json

import pytest

from diffuse.cli import main
from diffuse.server import security
from diffuse.server.security import check_bind, is_loopback, token_matches

TOKEN = "s3cret-token-for-tests"
BODY = {"prompt": "a red circle above a blue square", "steps": 1}


def test_every_route_but_the_page_needs_the_token(live):
    server = live(token=TOKEN)
    for path in ("/", "/static/app.js", "/static/style.css"):
        status, headers, _ = server.request("GET", path)
        assert status == 200, path
        assert "default-src 'self'" in headers["content-security-policy"]
    protected = [
        ("GET", "/api/models"),
        ("GET", "/openapi.json"),
        ("POST", "/api/jobs/text-to-image"),
        ("POST", "/api/jobs/img2img"),
        ("POST", "/api/jobs/inversion"),
        ("POST", "/api/jobs/inpaint"),
        ("POST", "/api/jobs/controlnet"),
        ("GET", "/api/jobs/0123456789abcdef"),
        ("DELETE", "/api/jobs/0123456789abcdef"),
        ("GET", "/api/jobs/0123456789abcdef/events"),
        ("GET", "/api/jobs/0123456789abcdef/images/0"),
        ("GET", "/no/such/route"),
    ]
    for method, path in protected:
        for token in (None, "wrong", TOKEN + "x", TOKEN[:-1], ""):
            status, headers, data = server.request(method, path, BODY, token=token)
            assert status == 401, (method, path, token)
            assert headers["www-authenticate"].startswith("Bearer")
            assert "token" in json.loads(data)["error"]
    status, _, _ = server.request("GET", "/api/models", headers={"Authorization": TOKEN})
    assert status == 401  # the scheme is required
    assert server.request("GET", "/api/models", token=TOKEN)[0] == 200
    assert server.request("GET", "/openapi.json", token=TOKEN)[0] == 200
    status, job = server.json("POST", "/api/jobs/text-to-image", BODY, token=TOKEN)
    assert status == 202
    assert server.wait(job["id"], token=TOKEN)["status"] == "done"


def test_tokens_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = security.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert token_matches(TOKEN, TOKEN) and not token_matches("x", TOKEN)
    assert not token_matches(None, TOKEN) and not token_matches("\udcff", TOKEN)
    assert len(calls) == 3 and all(isinstance(a, bytes) for a, _ in calls)


def test_no_path_reaches_a_file_outside_the_page(live):
    server = live()
    for path in (
        "/static/../app.py",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/index.html/../../../etc/passwd",
        "/static/app.js%00.png",
        "/static//etc/passwd",
        "/../../etc/passwd",
        "/api/jobs/..%2F..%2Fetc%2Fpasswd",
        "/api/jobs/0123456789abcdef/images/..%2F..%2Fetc%2Fpasswd",
    ):
        status, _, data = server.request("GET", path)
        assert status in (404, 422), (path, status)
        assert b"root:" not in data and b"import" not in data and b"[project]" not in data


def test_the_body_size_is_limited(live):
    server = live(max_body_bytes=2000)
    big = {"prompt": "a" * 3000}
    status, _, data = server.request("POST", "/api/jobs/text-to-image", big)
    assert status == 413 and "2000 bytes" in json.loads(data)["error"]
    # a chunked body without Content-Length is counted as it arrives
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    chunks = (json.dumps(big).encode()[i : i + 500] for i in range(0, 3100, 500))
    connection.request(
        "POST",
        "/api/jobs/text-to-image",
        body=chunks,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 413
    connection.close()
    status, _, _ = server.request("POST", "/api/jobs/text-to-image", {"prompt": "ok", "steps": 1})
    assert status == 202


def test_per_request_caps(live, pipe):
    server = live(max_steps=5, max_images=2, max_prompt_chars=40)
    cases = [
        ({"prompt": "x" * 41}, "prompt"),
        ({"prompt": "x", "negative_prompt": "y" * 41}, "negative_prompt"),
        ({"prompt": "x", "steps": 6}, "steps"),
        ({"prompt": "x", "n": 3}, "n"),
        ({"prompt": "x", "seeds": [1, 2, 3]}, "seeds"),
        ({"prompt": "x", "size": pipe.size * 2}, "size"),
        ({"prompt": "x", "size": 10**9}, "size"),
    ]
    for body, field in cases:
        status, error = server.json("POST", "/api/jobs/text-to-image", body)
        assert status == 422 and field in error["error"], (body, error)
    status, _ = server.json("POST", "/api/jobs/text-to-image", {"prompt": "x" * 40, "steps": 5})
    assert status == 202


def test_non_loopback_binds_need_a_token_or_insecure():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    check_bind("127.0.0.1", None, False)
    check_bind("0.0.0.0", "token", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="--token.*--insecure"):
        check_bind("0.0.0.0", None, False)


def test_the_command_refuses_an_open_bind_before_loading_anything(capsys, monkeypatch):
    monkeypatch.delenv("DIFFUSE_SERVE_TOKEN", raising=False)
    code = main(["serve", "--host", "0.0.0.0", "--model", "/nonexistent/model"])
    err = capsys.readouterr().err
    assert code == 2 and "0.0.0.0" in err and "--insecure" in err
    assert main(["serve", "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err
