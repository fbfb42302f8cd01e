"""The JSON API on a real server: jobs, images with their parameters, cross-request batching
(bit for bit equal to the pipeline alone), cancellation, previews, the queue bound, shutdown."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading

import numpy as np
from PIL import Image

from diffuse.pngmeta import params_from_bytes

PROMPT = "a red circle above a blue square"


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def alone(pipe, request: dict) -> list[np.ndarray]:
    """The images the library gives for a request, run by itself."""
    kw = {k: v for k, v in request.items() if k not in ("prompt", "negative_prompt")}
    out = pipe(request["prompt"], request.get("negative_prompt", ""), **kw)
    return [np.asarray(image) for image in out]


def test_models_list_their_defaults_and_the_caps(live, pipe):
    server = live(max_steps=20)
    status, models = server.json("GET", "/api/models")
    assert status == 200 and [m["name"] for m in models] == [pipe.name]
    model = models[0]
    assert model["defaults"]["sampler"] == pipe.defaults.sampler
    assert model["defaults"]["steps"] == pipe.defaults.steps
    assert model["size"] == pipe.size and model["limits"]["max_steps"] == 20
    assert "dpmpp_2m" in model["samplers"]
    assert model["tasks"] == ["text-to-image", "img2img", "inversion", "inpaint"]


def test_a_job_gives_pngs_with_their_parameters_equal_to_the_library(live, pipe):
    server = live()
    request = {"prompt": PROMPT, "seeds": [4, 9], "steps": 3, "sampler": "euler"}
    status, headers, data = server.request("POST", "/api/jobs/text-to-image", request)
    job = json.loads(data)
    assert status == 202 and headers["location"] == f"/api/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["steps"] == 3
    job = server.wait(job["id"])
    assert job["status"] == "done" and job["step"] == 3 and len(job["images"]) == 2
    expected = alone(pipe, request)
    for image, want in zip(job["images"], expected):
        status, headers, png = server.request("GET", image["url"])
        assert status == 200 and headers["content-type"] == "image/png"
        assert "attachment" in headers["content-disposition"]
        params = params_from_bytes(png)
        assert params == image["params"]
        assert params["prompt"] == PROMPT and params["steps"] == 3
        assert params["sampler"] == "euler" and params["model"] == pipe.name
        assert np.array_equal(pixels(png), want)
    assert [i["seed"] for i in job["images"]] == [4, 9]


def test_wait_and_base64_return_the_finished_job_inline(live):
    server = live()
    body = {"prompt": PROMPT, "n": 1, "steps": 2}
    status, job = server.json("POST", "/api/jobs/text-to-image?wait=true&base64=true", body)
    assert status == 200 and job["status"] == "done"
    inline = base64.b64decode(job["images"][0]["png_base64"])
    _, _, png = server.request("GET", job["images"][0]["url"])
    assert inline == png
    status, again = server.json("GET", f"/api/jobs/{job['id']}")
    assert status == 200 and "png_base64" not in again["images"][0]


def test_requests_running_together_share_network_calls_and_keep_their_pixels(live, pipe):
    server = live()
    requests = [
        {"prompt": PROMPT, "seeds": [1], "steps": 6},
        {"prompt": "a small green triangle at the bottom right", "seeds": [2, 3], "steps": 4},
        {
            "prompt": PROMPT,
            "negative_prompt": "a blue square",
            "seeds": [5],
            "steps": 5,
            "guidance": 2.5,
            "sampler": "unipc",
        },
        {
            "prompt": "a large yellow star in the top left",
            "seeds": [7],
            "steps": 3,
            "sampler": "heun",
        },
        {"prompt": PROMPT, "seeds": [8], "steps": 5, "sampler": "dpmpp_2m_sde"},
        {"prompt": PROMPT, "seeds": [9], "steps": 4, "guidance": 1.0},
    ]
    ids = []
    for request in requests:
        status, job = server.json("POST", "/api/jobs/text-to-image", request)
        assert status == 202, job
        ids.append(job["id"])
    for job_id, request in zip(ids, requests):
        job = server.wait(job_id)
        assert job["status"] == "done", job
        for image, want in zip(job["images"], alone(pipe, request)):
            assert np.array_equal(pixels(server.request("GET", image["url"])[2]), want), request
    _, models = server.json("GET", "/api/models")
    stats = models[0]["stats"]
    calls_alone = 6 + 4 + 5 + (2 * 3 - 1) + 5 + 4  # heun: two calls per step but the last
    assert stats["jobs_finished"] == len(requests)
    assert stats["network_calls"] < calls_alone  # calls were shared
    assert stats["rows"] > stats["network_calls"]


def test_cancel_a_running_and_a_queued_job(live):
    server = live(batching=False)
    body = {"prompt": PROMPT, "steps": 100}
    _, first = server.json("POST", "/api/jobs/text-to-image", body)
    _, second = server.json("POST", "/api/jobs/text-to-image", body)
    status, view = server.json("DELETE", f"/api/jobs/{second['id']}")
    assert status == 200 and view["status"] == "cancelled"  # queued: cancelled at once
    server.json("DELETE", f"/api/jobs/{first['id']}")
    job = server.wait(first["id"])
    assert job["status"] == "cancelled" and job["images"] == []
    status, error = server.json("GET", f"/api/jobs/{first['id']}/images/0")
    assert status == 409 and "cancelled" in error["error"]


def test_events_stream_progress_with_previews_then_the_job(live):
    server = live()
    _, job = server.json("POST", "/api/jobs/text-to-image", {"prompt": PROMPT, "steps": 5})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.request("GET", job["events_url"])
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("content-type").startswith("text/event-stream")
    events = []
    for block in response.read().decode().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if lines:
            name = lines[0].removeprefix("event: ")
            events.append((name, json.loads(lines[1].removeprefix("data: "))))
    connection.close()
    assert events[-1][0] == "done" and events[-1][1]["status"] == "done"
    previews = [data["preview"] for name, data in events if "preview" in data]
    assert len(previews) >= 2 and len(set(previews)) == len(previews)  # they change
    png = base64.b64decode(previews[-1].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size[0] > 0
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps == sorted(steps) and steps[-1] == 5


def test_a_full_queue_answers_429_with_retry_after(live):
    server = live(batching=False, max_queue=2)
    body = {"prompt": PROMPT, "steps": 100}
    codes, retry, accepted = [], [], []
    for _ in range(4):
        status, headers, data = server.request("POST", "/api/jobs/text-to-image", body)
        codes.append(status)
        if status == 429:
            retry.append(headers.get("retry-after"))
            assert "queue is full" in json.loads(data)["error"]
        else:
            accepted.append(json.loads(data)["id"])
    assert codes[:2] == [202, 202] and codes[2:] == [429, 429]
    assert all(r is not None and int(r) >= 1 for r in retry)
    for job_id in accepted:  # a cancelled job frees its place
        server.json("DELETE", f"/api/jobs/{job_id}")
        assert server.wait(job_id)["status"] == "cancelled"
    assert server.request("POST", "/api/jobs/text-to-image", {"prompt": "x", "steps": 1})[0] == 202


def test_bad_values_are_answered_422_naming_the_field(live):
    server = live(max_steps=10)
    cases = {
        "sampler": {"sampler": "nope"},
        "steps": {"steps": 11},
        "guidance": {"guidance": -1},
        "n": {"n": 0},
        "seeds": {"seeds": [-1]},
        "model": {"model": "other"},
        "size": {"size": 64},
        "color": {"color": "red"},
    }
    for field, extra in cases.items():
        status, error = server.json("POST", "/api/jobs/text-to-image", {"prompt": "x", **extra})
        assert status == 422 and field in error["error"], (field, error)
    status, error = server.json("POST", "/api/jobs/text-to-image", {"seeds": [1, 2], "n": 3})
    assert status == 422 and "seeds" in error["error"]
    status, error = server.json("GET", "/api/jobs/0123456789abcdef")
    assert status == 404 and "0123456789abcdef" in error["error"]
    status, error = server.json("GET", "/api/jobs/not-an-id")
    assert status == 422 and "job_id" in error["error"]
    status, _, data = server.request("POST", "/api/jobs/text-to-image", raw=b"{not json")
    assert status == 422


def test_shutdown_lets_running_jobs_finish(live):
    server = live(shutdown_grace=120)
    ids = [
        server.json("POST", "/api/jobs/text-to-image", {"prompt": PROMPT, "steps": 8})[1]["id"]
        for _ in range(2)
    ]
    store = server.app.state.store
    server.stop()
    assert [store.get(i).status.value for i in ids] == ["done", "done"]


def test_shutdown_past_the_grace_reports_jobs_cancelled(live):
    server = live(shutdown_grace=0, batching=False)
    ids = [
        server.json("POST", "/api/jobs/text-to-image", {"prompt": PROMPT, "steps": 100})[1]["id"]
        for _ in range(3)
    ]
    store = server.app.state.store
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(120)
    jobs = [store.get(i) for i in ids]
    assert all(j.status.value == "cancelled" for j in jobs)
    assert all("shut down" in j.error for j in jobs)
