"""Peak memory of a function, on CPU or GPU: how labkit.kernels' memory claims are measured (tests, bench).

GPU: torch.cuda's allocator statistics. CPU: torch has no allocator statistics there, so the profiler (with
profile_memory=True) records every allocation and free that torch's CPU allocator makes, with its size and
time; summing them in time order gives the bytes held at each moment. That counts exactly torch's tensors
(autograd's saved tensors and the temporaries inside ops included) and nothing else, unlike the process RSS,
which mixes in the Python heap, freed pages the allocator keeps and pages never touched; tracemalloc sees only
Python's own allocator, not torch's, and would report about 0 for any tensor code.
"""

import os
from collections.abc import Callable

import torch


def peak_bytes(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak bytes held by torch's allocator for `device` while fn() runs, above what was held when it
    started."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_peak_bytes(fn)


def _cpu_peak_bytes(fn) -> int:
    # The allocation events live in the profiler's event tree (what torch.profiler's memory timeline is built
    # from); alloc_size is negative for a free.
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    from labkit.quiet import verbose

    if not verbose():
        # Kineto prints "profiler_start"/"profiler_stop" lines (its USDT level, 5) to stderr on every
        # profile; above 5 it says nothing. Read when the profiler first starts, so setting it here works.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    held = peak = 0
    for _, size in sorted(events):
        held += size
        peak = max(peak, held)
    return peak
