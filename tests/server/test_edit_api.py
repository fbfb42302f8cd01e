"""The routes that start from an image (img2img, inversion, inpainting) and the ControlNet
route on a real server: the same pixels and PNG parameters as the CLI commands for the same
seed, while sharing network calls with each other and with text-to-image jobs; uploads checked
and every bad value answered 4xx naming the field."""

from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np
import pytest
from PIL import Image

from diffuse.cli import main
from diffuse.pngmeta import params_from_bytes, read_params
from diffuse.server import load_controlnets
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import caption, sample_split_scene

PROMPT = "a red circle above a blue square"
PATH_KEYS = ("image", "mask", "control")  # the CLI stores input paths; an upload has none


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def inputs(pipe, tmp_path_factory):
    """A scene picture, a binary mask and their files."""
    folder = tmp_path_factory.mktemp("inputs")
    scene = sample_split_scene(7, 0, "heldout")
    picture = render_scene(scene, pipe.size)
    mask = np.zeros((pipe.size, pipe.size), np.uint8)
    mask[: pipe.size // 2, : pipe.size // 2] = 255
    (folder / "scene.png").write_bytes(png(picture))
    (folder / "mask.png").write_bytes(png(mask))
    return {
        "folder": folder,
        "caption": caption(scene, 7, 0),
        "image": b64(png(picture)),
        "mask": b64(png(mask)),
        "picture": picture,
        "mask_pixels": mask,
    }


def cli_image(args: list[str], out) -> tuple[np.ndarray, dict]:
    assert main([*args, "-o", str(out), "--no-progress"]) == 0
    return np.asarray(Image.open(out)), read_params(out)


def same_record(server: dict, cli: dict) -> None:
    assert {k: v for k, v in server.items() if k not in PATH_KEYS} == {
        k: v for k, v in cli.items() if k not in PATH_KEYS
    }


def test_every_route_gives_the_cli_pixels_while_sharing_calls(
    live, pipe, model_dir, controlnet_dir, inputs, tmp_path
):
    controlnets = load_controlnets([controlnet_dir], {pipe.name: pipe})
    server = live(controlnets=controlnets)
    scene, mask = str(inputs["folder"] / "scene.png"), str(inputs["folder"] / "mask.png")
    common = {"prompt": PROMPT, "seeds": [3], "steps": 3}
    cli_common = [PROMPT, "--seed", "3", "--steps", "3", "--model", str(model_dir)]
    jobs = {
        "img2img": (
            common | {"image": inputs["image"], "strength": 0.5},
            ["edit", scene, *cli_common, "--strength", "0.5"],
        ),
        "inversion": (
            common | {"image": inputs["image"], "source_prompt": inputs["caption"]},
            ["edit", scene, *cli_common, "--invert", "--source", inputs["caption"]],
        ),
        "inpaint": (
            common
            | {"image": inputs["image"], "mask": inputs["mask"], "resample": 2, "feather": 1},
            ["inpaint", scene, *cli_common, "--mask", mask, "--resample", "2", "--feather", "1"],
        ),
        "controlnet": (
            common
            | {
                "control_image": inputs["image"],
                "control_kind": "edges",
                "control_scale": 0.8,
                "control_start": 0.9,
            },
            [
                "generate",
                *cli_common,
                "--controlnet",
                str(controlnet_dir),
                "--control",
                scene,
                "--control-scale",
                "0.8",
                "--control-start",
                "0.9",
            ],
        ),
        "text-to-image": (common, None),
    }
    ids = {}
    for task, (body, _) in jobs.items():
        status, job = server.json("POST", f"/api/jobs/{task}", body)
        assert status == 202 and job["kind"] == task, job
        ids[task] = job["id"]
    for task, (_, cli) in jobs.items():
        job = server.wait(ids[task])
        assert job["status"] == "done", job
        assert job["step"] == job["steps"] == (6 if task == "inversion" else 3)
        _, headers, data = server.request("GET", job["images"][0]["url"])
        assert headers["content-type"] == "image/png"
        params = params_from_bytes(data)
        assert params == job["images"][0]["params"] and params["seed"] == 3
        if cli is None:
            want = np.asarray(pipe(PROMPT, seeds=[3], steps=3)[0])
            assert np.array_equal(pixels_of(data), want)
            continue
        want, stored = cli_image(cli, tmp_path / f"{task}.png")
        assert np.array_equal(pixels_of(data), want), task
        same_record(params, stored)
    inpainted = server.json("GET", f"/api/jobs/{ids['inpaint']}")[1]["images"][0]["params"]
    assert inpainted["task"] == "inpaint" and inpainted["image"] == inpainted["mask"] == ""
    assert inpainted["resample"] == 2 and inpainted["feather"] == 1
    assert inpainted["mask_hash"] and inpainted["image_hash"]
    control = server.json("GET", f"/api/jobs/{ids['controlnet']}")[1]["params"]
    assert control["controlnet"] == str(controlnet_dir) and control["control_kind"] == "edges"
    assert control["control_scale"] == 0.8 and control["control_hash"]
    # alone, the jobs make 3 (img2img) + 6 (inversion) + 5 (RePaint x2: the last step once)
    # + 3 (ControlNet) + 3 network calls
    _, models = server.json("GET", "/api/models")
    assert models[0]["stats"]["jobs_finished"] == len(jobs)
    assert models[0]["stats"]["network_calls"] < 20


def test_a_server_png_is_reproduced_by_the_cli_from_png(live, model_dir, inputs, tmp_path):
    server = live()
    body = {
        "prompt": PROMPT,
        "seeds": [11],
        "steps": 2,
        "image": inputs["image"],
        "mask": inputs["mask"],
    }
    status, job = server.json("POST", "/api/jobs/inpaint?wait=true&base64=true", body)
    assert status == 200 and job["status"] == "done"
    made = tmp_path / "server.png"
    made.write_bytes(base64.b64decode(job["images"][0]["png_base64"]))
    scene, mask = str(inputs["folder"] / "scene.png"), str(inputs["folder"] / "mask.png")
    args = ["inpaint", scene, "--mask", mask, "--from-png", str(made), "--model", str(model_dir)]
    again, _ = cli_image(args, tmp_path / "again.png")
    assert np.array_equal(again, np.asarray(Image.open(made)))
    # outside the mask the input comes back exactly
    keep = inputs["mask_pixels"] == 0
    assert np.array_equal(again[keep], inputs["picture"][keep])


def test_models_list_the_tasks_and_controlnets(live, pipe, controlnet_dir):
    plain = live()
    tasks = plain.json("GET", "/api/models")[1][0]["tasks"]
    assert tasks == ["text-to-image", "img2img", "inversion", "inpaint"]
    controlnets = load_controlnets([controlnet_dir], {pipe.name: pipe})
    model = live(controlnets=controlnets).json("GET", "/api/models")[1][0]
    assert model["tasks"][-1] == "controlnet"
    assert model["controlnets"] == [{"name": "edges-cn", "kind": "edges"}]


def test_a_controlnet_fits_only_its_own_base(pipe, other_pipe, controlnet_dir, tmp_path):
    with pytest.raises(ValueError, match="no served model fits"):
        load_controlnets([controlnet_dir], {other_pipe.name: other_pipe})
    with pytest.raises(FileNotFoundError):
        load_controlnets([tmp_path], {pipe.name: pipe})
    served = load_controlnets([controlnet_dir], {other_pipe.name: other_pipe, pipe.name: pipe})
    assert [(c.name, c.model) for c in served] == [("edges-cn", pipe.name)]


def test_bad_uploads_and_values_are_answered_4xx_naming_the_field(
    live, pipe, other_pipe, controlnet_dir, inputs
):
    pipes = {pipe.name: pipe, other_pipe.name: other_pipe}
    server = live(pipes=pipes, controlnets=load_controlnets([controlnet_dir], pipes))
    size = pipe.size
    image, mask = inputs["image"], inputs["mask"]
    small = b64(png(np.zeros((size // 2, size // 2, 3), np.uint8)))
    grey_mask = inputs["mask_pixels"].copy()
    grey_mask[-1, -1] = 128
    small_mask = b64(png(np.full((size // 2, size // 2), 255, np.uint8)))
    black = b64(png(np.zeros((size, size), np.uint8)))
    base = {"prompt": PROMPT, "steps": 1}
    control = base | {"control_image": image}
    cases = [
        ("img2img", {"image": small}, 422, "image"),
        ("img2img", {"image": b64(b"not an image at all")}, 422, "image"),
        ("img2img", {"image": "@@@ not base64 @@@"}, 422, "image"),
        ("img2img", {"image": ""}, 422, "image"),
        ("img2img", {"image": image, "strength": 0}, 422, "strength"),
        ("img2img", {"image": image, "strength": 1.5}, 422, "strength"),
        ("img2img", {"image": image, "strength": -0.1}, 422, "strength"),
        ("img2img", {"strength": 0.5}, 422, "image"),
        ("inpaint", {"image": image}, 422, "mask"),
        ("inpaint", {"image": image, "mask": b64(png(grey_mask))}, 422, "mask"),
        ("inpaint", {"image": image, "mask": small_mask}, 422, "mask"),
        ("inpaint", {"image": image, "mask": black}, 422, "mask"),
        ("inpaint", {"image": small, "mask": mask}, 422, "image"),
        ("inpaint", {"image": image, "mask": mask, "resample": 0}, 422, "resample"),
        ("inpaint", {"image": image, "mask": mask, "feather": -1}, 422, "feather"),
        ("inversion", {"image": image}, 422, "source_prompt"),
        ("inversion", {"image": image, "source_prompt": "x", "sampler": "euler"}, 422, "sampler"),
        ("inversion", {"image": image, "source_prompt": "x", "inversion": "no"}, 422, "inversion"),
        (
            "inversion",
            {"image": image, "source_prompt": "x", "inversion": "dpmpp_2m", "refine": 2},
            422,
            "refine",
        ),
        ("controlnet", {"control_kind": "depth"}, 422, "control_kind"),
        ("controlnet", {"control_kind": "layout"}, 422, "controlnet"),
        ("controlnet", {"controlnet": "nope"}, 422, "controlnet"),
        ("controlnet", {"model": other_pipe.name}, 422, "controlnet"),
        ("controlnet", {"model": other_pipe.name, "controlnet": "edges-cn"}, 422, "controlnet"),
        ("controlnet", {"control_image": small}, 422, "control_image"),
        ("controlnet", {"control_scale": -1}, 422, "control_scale"),
        ("controlnet", {"control_start": 0.3, "control_end": 0.5}, 422, "control_end"),
    ]
    for route, extra, code, field in cases:
        body = (control if route == "controlnet" else base) | extra
        status, error = server.json("POST", f"/api/jobs/{route}", body)
        assert status == code and field in error["error"], (route, extra, error)
        assert "\n" not in error["error"]
    status, error = server.json("POST", "/api/jobs/controlnet", base | {"control_image": image})
    assert status == 202, error  # the model's own ControlNet is chosen
    assert server.wait(error["id"])["status"] == "done"


def test_uploads_are_held_to_the_size_limits(live, inputs, pipe):
    noise = np.random.default_rng(0).integers(0, 256, (pipe.size, pipe.size, 3), np.uint8)
    big = b64(png(noise))  # incompressible: ~3 bytes a pixel
    server = live(max_upload_bytes=1000, max_body_bytes=40000)
    body = {"prompt": PROMPT, "steps": 1, "image": big, "mask": inputs["mask"]}
    status, _, data = server.request("POST", "/api/jobs/inpaint", body)
    error = json.loads(data)["error"]
    assert status == 413 and error == "image: the upload is over 1000 bytes", error
    status, _, data = server.request(
        "POST", "/api/jobs/inpaint", body | {"image": inputs["image"], "mask": big}
    )
    assert status == 413 and "mask" in json.loads(data)["error"]
    # the body limit holds for images too: 413 before anything is read
    tight = live(max_body_bytes=2000)
    status, _, data = tight.request("POST", "/api/jobs/img2img", {"prompt": "x", "image": big})
    assert status == 413 and "2000 bytes" in json.loads(data)["error"]
    # a file under the byte limit that claims a huge size is refused before it is decoded
    bomb = io.BytesIO()
    Image.new("L", (8000, 8000)).save(bomb, format="PNG")
    roomy = live(max_upload_bytes=200000, max_body_bytes=400000)
    status, error = roomy.json("POST", "/api/jobs/img2img", {"image": b64(bomb.getvalue())})
    assert status == 422 and "image is 8000x8000" in error["error"]


def test_serve_refuses_a_controlnet_it_cannot_serve(other_pipe, controlnet_dir, tmp_path, capsys):
    folder = str(other_pipe.model.folder)
    assert main(["serve", "--model", folder, "--controlnet", str(tmp_path)]) == 2
    assert "holds no ControlNet" in capsys.readouterr().err
    assert main(["serve", "--model", folder, "--controlnet", str(controlnet_dir)]) == 2
    assert "no served model fits ControlNet" in capsys.readouterr().err


def test_edit_jobs_stream_previews_and_can_be_cancelled(live, inputs):
    server = live()
    body = {"prompt": PROMPT, "steps": 4, "image": inputs["image"], "source_prompt": PROMPT}
    _, job = server.json("POST", "/api/jobs/inversion", body)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.request("GET", job["events_url"])
    events = []
    for block in connection.getresponse().read().decode().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if lines:
            events.append((lines[0].removeprefix("event: "), json.loads(lines[1][6:])))
    connection.close()
    assert events[-1][0] == "done"
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps == sorted(steps) and steps[-1] == 8  # inversion walks the schedule twice
    assert len({data["preview"] for _, data in events if "preview" in data}) >= 2
    slow = {"prompt": PROMPT, "steps": 100, "resample": 20} | {
        k: inputs[k] for k in ("image", "mask")
    }
    _, job = server.json("POST", "/api/jobs/inpaint", slow)
    status, view = server.json("DELETE", f"/api/jobs/{job['id']}")
    assert status == 200
    job = server.wait(job["id"])
    assert job["status"] == "cancelled" and job["images"] == []
