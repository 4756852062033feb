"""The runtime layer: every model and artifact invocation in facemark, behind one contract.

face box -> square crop (facemark.codec) -> the artifact's own normalisation, layout and integer
I/O (runner.Runner.prepare) -> run -> (N, P, 2) normalised crop coordinates (Runner.decode) ->
image pixels (codec.to_image). Entry points:
- `create_runner(fmt, path, feed, size, norm)` -> the Runner of the format's facemark.backends row; feed:
  runner.Feed, the artifact's input layout and whether its preprocessing is baked;
  `TorchRunner(model, size, norm)` for PyTorch; `runner.predict(crops)` in-process;
- `run_artifact(...)` / `run_isolated(job, ...)`: the same runners in a child process
  (harness.py), for runtimes that may abort the process (LiteRT int8 kernels);
- `refine.Refinement`: test-time refinement (flip averaging, later passes on the landmark-box
  crop; configs/base.yaml `infer:`) around any of them, given as a function of crops.
"""

from facemark.runtime.runner import Feed
from facemark.runtime.litert import LiteRTRunner
from facemark.runtime.runners import CoreMLRunner, OnnxRunner, Runner, TorchRunner, create_runner

__all__ = ["CoreMLRunner", "Feed", "LiteRTRunner", "OnnxRunner", "Runner", "TorchRunner", "WorkerFailed",
           "create_runner", "run_artifact", "run_isolated"]


def __getattr__(name: str):
    # the harness is imported lazily: `python -m facemark.runtime.harness` must not find itself
    # already imported by its package (runpy warns about that)
    if name in ("WorkerFailed", "run_artifact", "run_isolated"):
        from facemark.runtime import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'facemark.runtime' has no attribute {name!r}")
