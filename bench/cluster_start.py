"""What a local dask cluster of two workers costs to start, its workers forked from a forkserver that
imported torch once (embed.cluster's way) against spawned afresh (dask's default), in this one run.

    .venv/bin/python bench/cluster_start.py [--clusters 3] [--json]

Each way runs in a process of its own, which starts `--clusters` clusters one after another and runs
one task on each worker that imports what stage one's task imports. CPU-seconds are the driver's own
plus those of every process below it, read before the cluster closes (a forkserver's children are
not the driver's to wait for, so resource.getrusage would miss them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import psutil


def _task() -> int:
    import embed.streaming  # noqa: F401 (what a stage-one task imports: torch, torchvision, facenet)

    return 1


def _tree_cpu() -> float:
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # ended meanwhile
            total += sum(child.cpu_times()[:2])
    return total


def _drive(mode: str, clusters: int) -> None:
    """One way, in this process: each cluster's seconds to ready and CPU-seconds, as JSON."""
    from embed.cluster import start_local_cluster

    rows = []
    for _ in range(clusters):
        start, cpu0 = time.perf_counter(), _tree_cpu()
        local, client, _ = start_local_cluster(2, gpus=0, forked=mode == "forkserver")
        client.gather(client.map(lambda _i: _task(), range(2), pure=False))
        rows.append({"seconds": round(time.perf_counter() - start, 2), "cpu_s": round(_tree_cpu() - cpu0, 2)})
        client.close()
        local.close()
    print(json.dumps(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clusters", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--drive", choices=("forkserver", "spawn"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        _drive(args.drive, args.clusters)
        return
    from stage_two import machine

    out: dict = {"machine": machine()}
    for mode in ("spawn", "forkserver"):
        cmd = [sys.executable, __file__, "--drive", mode, "--clusters", str(args.clusters)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cpu_ratio_after_first"] = round(
        sum(r["cpu_s"] for r in out["forkserver"][1:]) / max(sum(r["cpu_s"] for r in out["spawn"][1:]), 1e-9), 3
    )
    if args.json:
        print(json.dumps(out))
        return
    for mode in ("spawn", "forkserver"):
        print(mode, "; ".join(f"{r['seconds']} s, {r['cpu_s']} CPU-s" for r in out[mode]))
    print(f"CPU after the first cluster, forked / spawned: x{out['cpu_ratio_after_first']}\n{out['machine']}")


if __name__ == "__main__":
    main()
