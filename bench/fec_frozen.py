"""fec-train with the trunk's frozen blocks run once per image against every epoch running the whole
net (`cache_frozen` off, as before), on the synthetic FEC/AffectNet set, same seed, same settings.

    .venv/bin/python bench/fec_frozen.py [--per-class 6] [--triplets 192] [--epochs 5] [--json]

Prints each way's seconds and the ratio, the two histories' largest difference, and the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from stage_two import machine

from embed.fec.data import read_affectnet, read_fec_csv
from embed.fec.synthetic import generate_fec_sample
from embed.fec.train import FecTrainConfig, train_fec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=6)
    ap.add_argument("--triplets", type=int, default=192)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="affectseq-fec-bench-"))
    paths = generate_fec_sample(root / "data", per_class=args.per_class, triplets=args.triplets, seed=1)
    train, val = read_fec_csv(paths["fec_train"], paths["images"]), read_fec_csv(paths["fec_test"], paths["images"])
    affectnet = (read_affectnet(paths["affectnet"], "training"), read_affectnet(paths["affectnet"], "validation"))
    out: dict = {"machine": machine(), "train_triplets": len(train), "val_triplets": len(val), "epochs": args.epochs}
    histories = {}
    for cache in (True, False):
        cfg = FecTrainConfig(trunk_weights="random", epochs=args.epochs, patience=args.epochs, cache_frozen=cache)
        start = time.perf_counter()
        result = train_fec(train, val, cfg, out_dir=root / f"out-{cache}", affectnet=affectnet, progress=False)
        out["once" if cache else "every_epoch"] = round(time.perf_counter() - start, 1)
        histories[cache] = [(h.loss or 0.0, h.triplet_accuracy, h.expression_accuracy or 0.0) for h in result.history]
    out["ratio"] = round(out["once"] / out["every_epoch"], 3)
    out["largest_difference"] = max(
        abs(a - b) for x, y in zip(histories[True], histories[False], strict=True) for a, b in zip(x, y, strict=True)
    )
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['train_triplets']} triplets, {args.epochs} epochs: frozen blocks once {out['once']} s, "
            f"every epoch {out['every_epoch']} s (x{out['ratio']}); histories differ by at most "
            f"{out['largest_difference']:.2g}\n{out['machine']}"
        )


if __name__ == "__main__":
    main()
