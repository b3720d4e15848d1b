"""The reference `oo-bench replay` runs beside oO: IPW, clipped IPW and SNIPW for the uniform
target, as Open Bandit Pipeline 0.5.7 computes them, in numpy, and a bootstrap of the three.
Reads the JSON lines `oo-bench replay` wrote; prints one JSON object of timings (seconds, file
reading excluded). Needs numpy (`pip install numpy`).
Usage: python3 ope_numpy.py FILE.jsonl SAMPLES CLIP
"""
import json
import sys
import time

import numpy as np


def estimates(r, iw, clip):
    return (r * iw).mean(), (r * np.minimum(iw, clip)).mean(), (r * iw).mean() / iw.mean()


def main(path, samples, clip):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    r = np.array([x["reward"] for x in rows], dtype=np.float64)
    p = np.array([x["propensity"] for x in rows], dtype=np.float64)
    k = np.array([len(x["candidates"]) for x in rows], dtype=np.float64)
    started = time.perf_counter()
    iw = (1.0 / k) / p
    ipw = (r * iw).mean()
    one = time.perf_counter() - started
    rng = np.random.default_rng(1)
    n = len(r)
    started = time.perf_counter()
    draws = []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        draws.append(estimates(r[idx], iw[idx], clip))
    low = np.percentile(np.array(draws), 2.5, axis=0)
    boot = time.perf_counter() - started
    json.dump({"decisions": n, "ipw": ipw, "one_ipw_seconds": one, "bootstrap_seconds": boot, "ci_low": list(low)}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
