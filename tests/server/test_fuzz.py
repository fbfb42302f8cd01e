"""API fuzzing: schemathesis draws requests from the server's own OpenAPI schema (valid and
invalid bodies, paths and queries; the image fields' examples are real images of the model's
size, so the image routes run jobs too) against a live server with a ControlNet, a bounded
number per route. No answer
may be a 5xx; every 4xx carries a one-line message; every answer matches the schema."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, settings

from diffuse.server import load_controlnets
from live_server import LiveServer

schemathesis = pytest.importorskip("schemathesis", reason="needs the 'serve' extra")

TOKEN = "fuzz-token"
EXAMPLES = 25  # per route and generation mode: bounded, a minute or two in all


@pytest.fixture(scope="module")
def fuzz_server(pipe, controlnet_dir):
    server = LiveServer(
        pipe,
        load_controlnets([controlnet_dir], {pipe.name: pipe}),
        token=TOKEN,
        max_steps=2,
        max_images=2,
        max_queue=4,
        max_prompt_chars=50,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    _, _, data = fuzz_server.request("GET", "/openapi.json", token=TOKEN)
    return schemathesis.openapi.from_dict(json.loads(data))


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.check
def errors_carry_a_message(ctx, response, case) -> None:
    """A 4xx answer is JSON with a non-empty one-line "error"."""
    if 400 <= response.status_code < 500:
        message = response.json().get("error")
        assert isinstance(message, str) and message and "\n" not in message, response.text


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_never_fails_on_any_input(case, fuzz_server):
    response = case.call(  # a job with ?wait=true may queue behind others on a busy machine
        base_url=fuzz_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300
    )
    case.validate_response(
        response,
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.status_code_conformance,
            schemathesis.checks.content_type_conformance,
            schemathesis.checks.response_schema_conformance,
            errors_carry_a_message,
        ],
    )
