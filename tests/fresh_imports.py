"""Which modules a fresh interpreter holds after running some code: one helper process per test
process serves every such check.

Starting an interpreter and importing torch takes seconds. The helper does both once, then
forks a child per check, which runs the code and reports `sys.modules`; each check pays only for
the imports its code makes. The helper has loaded the standard library and torch (which loads
nothing of diffuse and no text-model library), with the repository's src/ first on sys.path, in
a bare environment (PATH empty, one OpenMP thread).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

HELPER = r"""
import json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
import torch  # noqa: F401  (the slow import every check would repeat)
for line in sys.stdin:
    code = json.loads(line)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the code's prints stay out of the replies
        try:
            exec(compile(code, "<check>", "exec"), {"__name__": "__check__"})
            answer = {"modules": sorted(sys.modules)}
        except BaseException:
            answer = {"error": traceback.format_exc()}
        with os.fdopen(write, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as inp:
        answer = inp.read()
    os.waitpid(pid, 0)
    sys.stdout.write((answer or json.dumps({"error": "the check's process died"})) + "\n")
    sys.stdout.flush()
"""


class FreshImports:
    """`fresh(code)`: the sorted names in `sys.modules` after `code` ran in a fresh process."""

    def __init__(self) -> None:
        self._helper: subprocess.Popen | None = None

    def __call__(self, code: str, timeout: float = 300.0) -> list[str]:
        helper = self._start()
        helper.stdin.write(json.dumps(code) + "\n")
        helper.stdin.flush()
        ready, _, _ = select.select([helper.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise TimeoutError(f"no answer in {timeout} s for the check:\n{code}")
        line = helper.stdout.readline()
        if not line:
            raise RuntimeError(f"the import-check helper exited with status {helper.wait()}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"the check failed in its fresh process:\n{answer['error']}")
        return answer["modules"]

    def _start(self) -> subprocess.Popen:
        if self._helper is None or self._helper.poll() is not None:
            self._helper = subprocess.Popen(
                [sys.executable, "-c", HELPER, str(SRC)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={"PATH": "", "OMP_NUM_THREADS": "1"},
            )
        return self._helper

    def close(self) -> None:
        """Stop the helper (it holds nothing worth a clean shutdown)."""
        if self._helper is not None:
            self._helper.kill()
            self._helper.wait()
            self._helper.stdin.close()
            self._helper.stdout.close()
        self._helper = None
