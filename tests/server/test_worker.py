"""The model worker on its own: the jobs that finish in one tick are decoded in one call and
get exactly the images each gets alone; a preview is one more decode of its tick."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from diffuse.pipelines.sample import to_uint8
from diffuse.server.jobs import Job, JobStatus
from diffuse.server.settings import ServerSettings
from diffuse.server.worker import ModelWorker


def _job(pipe, prompt: str, seeds: tuple[int, ...], steps: int) -> Job:
    params = pipe.params(prompt, seeds=seeds, steps=steps)

    def body(network, callback, decoder):
        return pipe.generate(params, callback=callback, network=network, decoder=decoder)

    return Job("text-to-image", params, body)


def test_jobs_finishing_in_one_tick_share_one_decode(pipe):
    jobs = [
        _job(pipe, "a blue circle", (1,), 3),
        _job(pipe, "a red circle above a blue square", (2, 3), 3),
        _job(pipe, "two red triangles", (4,), 3),
    ]
    jobs[0].watchers = 1  # as if an event stream were open: a preview at every step
    worker = ModelWorker(pipe, ServerSettings())
    for job in jobs:
        worker.submit(job)  # queued before the thread starts: admitted in one tick
    worker.start()
    worker.stop(grace=600)  # returns once the accepted jobs have finished
    for job in jobs:
        assert job.status is JobStatus.DONE, job.error
        want = to_uint8(pipe.generate(job.params))
        got = [np.asarray(Image.open(io.BytesIO(image.png))) for image in job.images]
        assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))
    assert jobs[0].preview is not None and jobs[0].preview_step == 3
    # one decode per tick: the watched job's previews of steps 1 and 2, then its last preview
    # with the other jobs' images, then its own images
    assert worker.stats.network_calls == 3 and worker.stats.decode_calls == 4
