"""Load time of the embedded model: labkit's safetensors cache vs parsing the GGUF file (the baseline).

Run: .venv/bin/python bench/load_model.py [--repeats 3]. Alternates the two loads in one process and
prints medians and the ratio last.
"""

from __future__ import annotations

import argparse
import statistics
import time

from labkit.models import ensure_embedded_cache, load_from_gguf, load_model


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ensure_embedded_cache()  # the one-off conversion is not what we measure
    gguf, cached = [], []
    for i in range(args.repeats):
        gguf.append(timed(load_from_gguf))
        cached.append(timed(lambda: load_model(dtype="float32")))
        print(f"run {i}: gguf {gguf[-1]:.2f} s, labkit cache {cached[-1]:.2f} s", flush=True)
    g, c = statistics.median(gguf), statistics.median(cached)
    print(f"median load: gguf {g:.2f} s, labkit cache {c:.2f} s")
    print(f"ratio (gguf / labkit cache): {g / c:.1f}x")


if __name__ == "__main__":
    main()
