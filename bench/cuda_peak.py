"""Run a module as its own CLI and print the CUDA allocator's peak at exit.

`python -m bench.cuda_peak MODULE ARGS...` behaves like `python -m MODULE ARGS...` plus one last
line `cuda_peak_bytes=N`, so that a third-party CLI (pastiche) reports the same figure as
stylefold's own runs without any change to it.
"""

import atexit
import runpy
import sys

import torch


def _report() -> None:
    if torch.cuda.is_available():
        print(f"cuda_peak_bytes={torch.cuda.max_memory_allocated()}", flush=True)


if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    atexit.register(_report)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
