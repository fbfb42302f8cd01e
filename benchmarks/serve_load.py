"""Load on `diffuse serve`: cross-request step batching on against off, in one run.

For each mode a server is started as its own process (`diffuse serve --port P`, with
`--no-batching` for "off") on a free loopback port. `--clients` client threads each send
`--requests` text-to-image jobs one after another (POST /api/jobs/text-to-image?wait=true&
base64=true), every request with its own prompt, seed and step count (the same set of
requests in both modes). Reported per mode: throughput in images per second over the whole
run, p50/p95 latency of a request, the answers by status code, network calls and rows per call,
decode calls, and the worker's seconds in network calls, decodes, the jobs' own steps and job
starts (from GET /api/models). Then every image of the batched run is compared byte for byte
with the same request's image from the unbatched run (each request run by itself), and
`--library-checks` requests are also run alone through `TextToImagePipeline` in this process
and compared pixel for pixel. The run is bounded: each request has a timeout, and the whole
run stops by itself.

    python benchmarks/serve_load.py --json serve_load.json
    python benchmarks/serve_load.py --clients 8 --requests 2 --steps 2,3   # a quick look
    python benchmarks/serve_load.py --repeats 3   # on, off three times: less drift of the load

With `--mix edits` the requests cycle through text-to-image, img2img (strength 0.6), inpainting
(a fixed square mask) and edit by inversion (source prompt: the picture's caption), each edit
on a Shapes picture of its own; the library check runs those through `pipe.run_edit`.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffuse.pipelines.sample import to_uint8
from diffuse.pipelines.text_to_image import load_pipeline
from diffuse.shapes.render import render_scene
from diffuse.shapes.scenes import caption, sample_split_scene

PROMPTS = [
    "a red circle above a blue square",
    "a large yellow star in the top left",
    "a small green triangle at the bottom right",
    "a white square to the left of a purple circle",
    "a blue circle",
    "two red triangles",
    "a large orange square below a small white star",
    "a purple star in the middle",
    "a green circle to the right of a yellow triangle",
    "a small blue square in the top right",
]


EQUAL_LENGTH = [  # a diagnostic set: different prompts of one token length (10 with MiniLM)
    "a large yellow star in the top left",
    "a small green triangle at the bottom right",
    "a small blue square in the top right",
]


MIX = ("text-to-image", "img2img", "inpaint", "inversion")  # --mix edits, in turn


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def edit_inputs(k: int, size: int) -> tuple[bytes, bytes, str]:
    """Request k's input picture (PNG), the mask (PNG: the central square) and its caption."""
    scene = sample_split_scene(11, k, "heldout")
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return png_bytes(render_scene(scene, size)), png_bytes(mask), caption(scene, 11, k)


def add_edits(requests: list[list[dict]], size: int) -> None:
    """Turn the plan into the --mix edits plan: each request gets its task in turn."""
    for c, mine in enumerate(requests):
        for r, body in enumerate(mine):
            k = c * len(mine) + r
            task = MIX[k % len(MIX)]
            body["_task"] = task
            if task == "text-to-image":
                continue
            image, mask, text = edit_inputs(k, size)
            body["image"] = base64.b64encode(image).decode()
            if task == "img2img":
                body["strength"] = 0.6
            elif task == "inpaint":
                body["mask"] = base64.b64encode(mask).decode()
            else:
                body["source_prompt"] = text


def library_images(pipe, body: dict) -> np.ndarray:
    """The request's first image, run alone through the library."""
    task = body.get("_task", "text-to-image")
    if task == "text-to-image":
        return np.asarray(pipe(body["prompt"], seeds=body["seeds"], steps=body["steps"])[0])
    image = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask"]))) if "mask" in body else None
    extra = {key: body[key] for key in ("strength", "source_prompt") if key in body}
    params = pipe.edit_params(
        task, body["prompt"], image, mask=mask, seeds=body["seeds"], steps=body["steps"], **extra
    )
    out = pipe.run_edit(params, image, mask=mask)
    return to_uint8(out)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plan(clients: int, requests: int, steps: list[int], prompts: list[str]) -> list[list[dict]]:
    """Per client, its requests: different prompts, seeds and step counts."""
    out = []
    for c in range(clients):
        mine = []
        for r in range(requests):
            k = c * requests + r
            mine.append(
                {
                    "prompt": prompts[k % len(prompts)],
                    "seeds": [1000 + k],
                    "steps": steps[(c + r) % len(steps)],
                }
            )
        out.append(mine)
    return out


def call(port: int, method: str, path: str, body: dict | None, timeout: float):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def run_mode(args: argparse.Namespace, batching: bool, requests: list[list[dict]]) -> dict:
    """Start a server, run the clients, stop it; results and images of this mode."""
    port = free_port()
    command = [sys.executable, "-m", "diffuse", "serve", "--port", str(port)]
    command += ["--max-queue", str(args.clients * 2), "--max-steps", str(max(args.steps_list))]
    if args.model:
        command += ["--model", args.model]
    if not batching:
        command.append("--no-batching")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if call(port, "GET", "/api/models", None, 5)[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {server.stderr.read().decode()}")
            time.sleep(0.2)
        results: dict[tuple[int, int], dict] = {}
        lock = threading.Lock()

        def client(c: int) -> None:
            for r, planned in enumerate(requests[c]):
                body = {k: v for k, v in planned.items() if k != "_task"}
                route = planned.get("_task", "text-to-image")
                start = time.perf_counter()
                try:
                    status, data = call(
                        port,
                        "POST",
                        f"/api/jobs/{route}?wait=true&base64=true",
                        body,
                        args.timeout,
                    )
                except OSError as error:
                    status, data = 0, str(error).encode()
                elapsed = time.perf_counter() - start
                pngs = []
                if status == 200:
                    job = json.loads(data)
                    if job["status"] == "done":
                        pngs = [base64.b64decode(i["png_base64"]) for i in job["images"]]
                    else:
                        status = -1  # answered, but the job did not finish
                with lock:
                    results[(c, r)] = {"status": status, "seconds": elapsed, "pngs": pngs}

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        _, data = call(port, "GET", "/api/models", None, 30)
        stats = json.loads(data)[0]["stats"]
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    latencies = sorted(v["seconds"] for v in results.values())
    statuses: dict[str, int] = {}
    for v in results.values():
        statuses[str(v["status"])] = statuses.get(str(v["status"]), 0) + 1
    images = sum(len(v["pngs"]) for v in results.values())
    return {
        "batching": batching,
        "wall_s": wall,
        "images": images,
        "images_per_s": images / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "statuses": statuses,
        "server_errors": sum(n for s, n in statuses.items() if s.startswith("5")),
        "network_calls": stats["network_calls"],
        "rows_per_call": stats["rows"] / max(1, stats["network_calls"]),
        "decode_calls": stats["decode_calls"],
        "worker_network_s": stats["network_seconds"],
        "worker_decode_s": stats["decode_seconds"],
        "worker_steps_s": stats["step_seconds"],
        "worker_start_s": stats["start_seconds"],
        "_results": results,
    }


def images_per_s(runs: list[dict]) -> float:
    """Images per second over several runs of one mode."""
    return sum(r["images"] for r in runs) / sum(r["wall_s"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: bundled)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--steps", default="4,6,8,10", help="step counts, used in turn")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    parser.add_argument("--library-checks", type=int, default=8)
    parser.add_argument(
        "--prompt-set",
        choices=["varied", "equal-length"],
        default="varied",
        help="varied: 10 prompts of 5-12 tokens (the measurement); equal-length: 3 prompts of "
        "one token length, a diagnostic of what splitting calls by prompt length costs",
    )
    parser.add_argument(
        "--mix",
        choices=["text", "edits"],
        default="text",
        help="text: text-to-image only; edits: text-to-image, img2img, inpaint and inversion "
        "jobs in turn",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the modes on, off, on, off, ... this many times each; the ratio is of the "
        "images per second over all runs of each mode (a shared machine's load drifts)",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    args.steps_list = [int(s) for s in args.steps.split(",")]
    prompts = PROMPTS if args.prompt_set == "varied" else EQUAL_LENGTH
    requests = plan(args.clients, args.requests, args.steps_list, prompts)
    pipe = load_pipeline(args.model)
    if args.mix == "edits":
        add_edits(requests, pipe.size)
    load_before = os.getloadavg()
    runs = []  # on, off, on, off, ...
    for repeat in range(args.repeats):
        for batching in (True, False):
            runs.append(run_mode(args, batching, requests) | {"repeat": repeat})
    load_after = os.getloadavg()
    ons, offs = runs[0::2], runs[1::2]
    on = ons[0]

    # Every batched image against the same request run by itself (batching off) ...
    same, compared = 0, 0
    for batched, unbatched in zip(ons, offs):
        for key, result in batched["_results"].items():
            alone = unbatched["_results"][key]["pngs"]
            if result["pngs"] and alone:
                compared += 1
                same += result["pngs"] == alone
    # ... and some against the library, run alone in this process.
    library_same = 0
    flat = [(c, r) for c in range(args.clients) for r in range(args.requests)]
    stride = max(1, len(flat) // max(1, args.library_checks))
    # spread over the clients and, with --mix edits, over the tasks (k + i covers each in turn)
    picks = [flat[(i * stride + i) % len(flat)] for i in range(min(len(flat), args.library_checks))]
    for c, r in picks:
        want = library_images(pipe, requests[c][r])
        pngs = on["_results"][(c, r)]["pngs"]
        got = np.asarray(Image.open(io.BytesIO(pngs[0]))) if pngs else None
        library_same += got is not None and np.array_equal(got, want)

    total = args.clients * args.requests
    summary = {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "steps": args.steps_list,
        "prompt_set": args.prompt_set,
        "mix": list(MIX) if args.mix == "edits" else ["text-to-image"],
        "model": args.model or "bundled shapes-t2i",
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "modes": [{k: v for k, v in m.items() if not k.startswith("_")} for m in runs],
        "throughput_ratio": images_per_s(ons) / images_per_s(offs),
        "pair_ratios": [a["images_per_s"] / b["images_per_s"] for a, b in zip(ons, offs)],
        "requests": total,
        "batched_equal_to_alone": f"{same}/{compared}",
        "batched_equal_to_library": f"{library_same}/{len(picks)}",
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print()
    print(
        "| run | batching | images/s | p50 s | p95 s | answers | 5xx | network calls | rows/call "
        "| decode calls | worker s: network / decodes / steps / starts |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in summary["modes"]:
        answers = ", ".join(f"{n}x{s}" for s, n in sorted(m["statuses"].items()))
        print(
            f"| {m['repeat'] + 1} | {'on' if m['batching'] else 'off'} | {m['images_per_s']:.3f} "
            f"| {m['p50_s']:.1f} "
            f"| {m['p95_s']:.1f} | {answers} | {m['server_errors']} | {m['network_calls']} "
            f"| {m['rows_per_call']:.1f} | {m['decode_calls']} | {m['worker_network_s']:.1f} / "
            f"{m['worker_decode_s']:.1f} / {m['worker_steps_s']:.1f} / {m['worker_start_s']:.1f} |"
        )
    pairs = ", ".join(f"{r:.2f}x" for r in summary["pair_ratios"])
    print(
        f"\nthroughput ratio on/off: {summary['throughput_ratio']:.2f}x (runs in pairs: {pairs}); "
        "batched images equal "
        f"to the request alone: {summary['batched_equal_to_alone']} (server, batching off), "
        f"{summary['batched_equal_to_library']} (library); load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )


if __name__ == "__main__":
    main()
