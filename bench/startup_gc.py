"""What a command's start-up costs with the cyclic collector's policy of both CLIs (embed.memory's
GC_THRESHOLDS, set by embed.console.run_app) against CPython's default thresholds, in this one run.

    .venv/bin/python bench/startup_gc.py [--runs 6] [--json]

Each run is a fresh process that imports what `sequence serve`, `predict` and stage one import
(torch, torchvision, facenet-pytorch, the engine, the server); the two policies alternate, so a
busy spell of the machine falls on both. CPU-seconds are the process's own, read after the imports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_CHILD = """
import gc, json, sys, time
if sys.argv[1] == "ours":
    from embed.memory import apply_gc_policy
    apply_gc_policy()
import embed.engine, sequence.predict, sequence.live, sequence.serve.app
print(json.dumps({"cpu_s": time.process_time(), "collections": [g["collections"] for g in gc.get_stats()]}))
"""


def _one(policy: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, policy], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from stage_two import machine

    rows: dict[str, list[dict]] = {"default": [], "ours": []}
    _one("default")  # the first process reads the files from disk; not counted
    for _ in range(args.runs):
        for policy in rows:
            rows[policy].append(_one(policy))
    out: dict = {"machine": machine(), "runs": args.runs}
    for policy, runs in rows.items():
        cpu = [r["cpu_s"] for r in runs]
        out[policy] = {
            "cpu_s_median": round(statistics.median(cpu), 3),
            "cpu_s": [round(c, 3) for c in cpu],
            "collections": runs[-1]["collections"],
        }
    out["cpu_ratio"] = round(out["ours"]["cpu_s_median"] / out["default"]["cpu_s_median"], 3)
    if args.json:
        print(json.dumps(out))
        return
    for policy in rows:
        r = out[policy]
        print(f"{policy:8s} median {r['cpu_s_median']} CPU-s; collections by generation {r['collections']}")
    print(f"ours / default: x{out['cpu_ratio']}\n{out['machine']}")


if __name__ == "__main__":
    main()
