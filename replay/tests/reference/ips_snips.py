"""Reference values for replay/tests/exactness.rs: Open Bandit Pipeline 0.5.7's
InverseProbabilityWeighting and SelfNormalizedInverseProbabilityWeighting, reproduced with numpy
(obp itself needs Python < 3.11 pins and does not import here). OBP computes, with
iw = action_dist[n, action, 0] / pscore:
    IPW   = mean(reward * iw)
    SNIPW = mean(reward * iw) / mean(iw)
Usage: python3 ips_snips.py FILE.jsonl > ips_snips.json
"""
import json
import sys

import numpy as np


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main(path: str) -> None:
    raw = open(path, "rb").read()
    rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    reward = np.array([r["reward"] for r in rows], dtype=np.float64)
    pscore = np.array([r["propensity"] for r in rows], dtype=np.float64)
    chosen = [next(i for i, c in enumerate(r["candidates"]) if c["id"] == r["chosen"]) for r in rows]
    targets = {
        # Every candidate equally likely.
        "uniform": np.array([1.0 / len(r["candidates"]) for r in rows]),
        # The logging policy: its own probability of the logged action.
        "logged": np.array([r["distribution"][a] for r, a in zip(rows, chosen)]),
    }
    out = {"file_fnv1a": fnv1a(raw), "decisions": len(rows)}
    for name, pi in targets.items():
        iw = pi / pscore
        out[name] = {
            "ipw": float((reward * iw).mean()),
            "snipw": float((reward * iw).mean() / iw.mean()),
        }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
