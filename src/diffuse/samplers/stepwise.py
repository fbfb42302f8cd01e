"""Sampler runs driven one network call at a time from outside: the stepper form.

A sampler is a plain loop that calls `denoise` (DESIGN.md, "Samplers are functions"). For many
runs at different steps to share one network call (a server batching requests that arrived at
different times), each run must pause at every call, hand its input to whoever batches, and go
on with the output it is given:

    runs = [StepwiseRun(lambda call: dpmpp_2m(call, x, levels)) for x in starts]
    while any(not r.done for r in runs):
        live = [r for r in runs if not r.done]
        outputs = network(torch.cat([r.call.x for r in live]), ...)   # one call for all
        for r, out in zip(live, outputs.split(...)):
            r.answer(out)                                # r runs on to its next call
    images = [r.result() for r in runs]

Python's generators cannot pause inside a nested call (the sampler calls guidance, which calls
the network), so a run keeps the unchanged loop on a thread of its own and the two threads hand
over at every network call: exactly one of them works at any moment, the history of a multistep
sampler stays a local variable of its loop, and a stepped run computes what the plain call
computes, bit for bit, for every sampler (Heun's two calls per step and the stochastic samplers'
per-sample noise included).

A body may also pause on requests of its own (`pause`): a server pauses each finished run on
the decode of its samples, so that the runs finishing in one tick are decoded in one call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["NetworkCall", "RunCancelled", "StepwiseRun", "drive", "pause"]


@dataclass(frozen=True)
class NetworkCall:
    """One network call a paused run waits on.

    Attributes:
        x: the input rows [B, ...].
        level: the noise level: a 0-dim tensor (all rows) or [B].
        cond: keyword conditioning, each tensor batch B or 1, or None.
    """

    x: Tensor
    level: Tensor
    cond: Mapping[str, Tensor] | None


CallFn = Callable[..., Tensor]
"""call(x, level, cond=None) -> output: what a run's body uses as its network."""


class RunCancelled(Exception):
    """Raised inside a run's body at its pending call when the run is cancelled."""


_BODY = threading.local()  # .run: the StepwiseRun whose body this thread runs


def pause(request: Any) -> Any:
    """Inside a run's body: hand `request` to the driver (it becomes the run's `call`) and wait
    for the output `answer` gives it. The body's network calls pause this way as `NetworkCall`s;
    other requests are whatever body and driver agree on.

    Raises:
        RuntimeError: called outside a run's body.
        RunCancelled: the run was cancelled while it waited.
    """
    run = getattr(_BODY, "run", None)
    if run is None:
        raise RuntimeError("pause() is for the body of a StepwiseRun, on its own thread")
    return run._pause(request)


class StepwiseRun:
    """A computation paused at each network call until `answer` gives it the output.

    The body starts at once and runs to its first call (or to its end) before the constructor
    returns. Exceptions of the body are kept and raised by `result`.

    Args:
        body: body(call) -> result, where call(x, level, cond=None) -> output is the network
            the body must use (e.g. a sampler over a guided denoiser built on `call`).
        name: the thread's name, for debugging.
    """

    def __init__(self, body: Callable[[CallFn], Tensor], name: str = "stepwise-run") -> None:
        self._to_body: queue.SimpleQueue = queue.SimpleQueue()
        self._to_driver: queue.SimpleQueue = queue.SimpleQueue()
        self._call: Any = None
        self._running = False  # resumed and not yet settled
        self._finished = False
        self._value: Tensor | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(body,), name=name, daemon=True)
        self._thread.start()
        self._wait()

    # --- the body's thread -------------------------------------------------------------------

    def _main(self, body: Callable[[CallFn], Tensor]) -> None:
        _BODY.run = self
        try:
            value = body(self._network)
        except BaseException as error:  # handed to the driver, raised there by result()
            self._to_driver.put(("error", error))
        else:
            self._to_driver.put(("done", value))

    def _network(self, x: Tensor, level: Tensor, cond: Mapping[str, Tensor] | None = None):
        return self._pause(NetworkCall(x, level, cond))

    def _pause(self, request: Any) -> Any:
        self._to_driver.put(("call", request))
        kind, value = self._to_body.get()
        if kind == "cancel":
            raise RunCancelled("the run was cancelled")
        return value

    # --- the driver's side -------------------------------------------------------------------

    def _wait(self) -> None:
        """Block until the body posts its next call or ends."""
        kind, value = self._to_driver.get()
        if kind == "call":
            self._call = value
            return
        self._call, self._finished = None, True
        if kind == "done":
            self._value = value
        else:
            self._error = value
        self._thread.join()

    @property
    def call(self) -> Any:
        """What the body waits on: a `NetworkCall`, or a request the body gave `pause`; None
        once it has finished."""
        return self._call

    @property
    def done(self) -> bool:
        """True once the body has returned, raised, or been cancelled."""
        return self._finished

    def answer(self, output: Any) -> None:
        """Give the pending call its output; returns when the body waits again or has ended.

        Raises:
            RuntimeError: the run has no pending call (it has finished).
        """
        self.resume(output)
        self.settle()

    def resume(self, output: Any) -> None:
        """Give the pending call its output and return at once; the body runs on until `settle`
        is called. Several runs resumed together run side by side (each on its own data, so
        each computes what it computes alone); settle every one before the next `call`.

        Raises:
            RuntimeError: the run has no pending call, or was resumed and not settled.
        """
        if self._call is None:
            raise RuntimeError("the run has finished; there is no call to answer")
        self._call, self._running = None, True
        self._to_body.put(("output", output))

    def settle(self) -> None:
        """Wait until a resumed run calls the network again or ends (a no-op otherwise)."""
        if self._running:
            self._running = False
            self._wait()

    def cancel(self) -> None:
        """Stop the run: its pending call raises `RunCancelled` in the body (a no-op once done)."""
        self.settle()
        if self._finished:
            return
        self._call = None
        self._to_body.put(("cancel", None))
        self._wait()

    def result(self) -> Tensor:
        """The body's return value.

        Raises:
            RuntimeError: the run has not finished.
            RunCancelled, or whatever the body raised.
        """
        if not self._finished:
            raise RuntimeError("the run has not finished; answer its pending calls first")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def drive(run: StepwiseRun, network: CallFn) -> Tensor:
    """Answer every call of `run` with `network(x, level, cond)` and return its result (the run
    alone, as the plain call would compute it)."""
    while not run.done:
        call = run.call
        if not isinstance(call, NetworkCall):
            raise TypeError(f"drive answers network calls only; the run waits on {call!r}")
        run.answer(network(call.x, call.level, call.cond))
    return run.result()
