"""A torch.profiler (CUPTI) trace of device work: what the GPU time breakdown (native/bench/kernel_breakdown.py)
and the sampling check's kernel timing (check_sample.py) read. torch is imported only when asked for, so a
machine without torch still runs the callers' other parts."""

import json
import os
import tempfile


def device_trace(run, pick, looking_for):
    """Runs run() under torch.profiler; -> (pick(trace), run()'s value, trace) for the first trace in which
    pick finds something, else (None, None, why not).

    Device activity alone first (ProfilerActivity.CUDA); should that record nothing pick wants, once more
    with CPU activity as well, in case this kineto keeps only GPU activity it can link to a host event.
    `looking_for` names what pick looks for, for the why."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except Exception as e:  # noqa: BLE001 - any import failure means no profiler
        return None, None, f"torch.profiler not importable: {e}"
    if not torch.cuda.is_available():
        return None, None, f"torch {torch.__version__} sees no CUDA device, so CUPTI is not started"
    why = ""
    for activities in ([ProfilerActivity.CUDA], [ProfilerActivity.CPU, ProfilerActivity.CUDA]):
        try:
            with profile(activities=activities) as prof:
                value = run()
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "trace.json")
                prof.export_chrome_trace(path)
                with open(path) as f:
                    trace = json.load(f)
        except Exception as e:  # noqa: BLE001 - a profiler failure is reported, it does not end the caller
            why = f"torch.profiler failed: {e}"
            continue
        found = pick(trace)
        if found:
            return found, value, trace
        why = f"torch.profiler recorded no {looking_for} (CUPTI unavailable?)"
    return None, None, why
