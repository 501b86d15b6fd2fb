"""The language bridge on ModelNet40 (issue 29): stage 1 then stage 2 of `svl finetune task=language`
for each encoder checkpoint and seed, with the builtin small LM (a pipeline check, not a language
model of the field's size). Reported per run: generative classification on the full ModelNet40 test
split (held-out phrasings), the linear probe on the same frozen global features, exact match on
yes/no and multiple choice, caption similarity, the encoder's energy, wall time; then mean ± std per
encoder and the paired gap gen_cls - probe.

    python benchmarks/language_bridge.py --out runs/bench_language \
        --encoder svl_snn=runs/readme27/t1_s{seed}/final.safetensors \
        --encoder svl_ann=runs/lang29/pretrain_ann/final.safetensors --encoder random=scratch \
        --seeds 0 1 2

`{seed}` in a path is replaced by the seed (one pretraining run per seed). Settings beyond the
defaults go to both stages as `--set key=value`; `--stage1-epochs` / `--stage2-epochs` set each
stage's epochs. Nothing here reads the test split to choose a setting: choose on `val/gen_cls_acc`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from _summary import mean_std, run_logged, write_summary  # benchmarks/_summary.py

KEYS = (
    "gen_cls_acc",
    "probe_acc",
    "probe_val_acc",
    "yesno_em",
    "choice_em",
    "caption_similarity",
    "answer_words",
)


def val_metric(run: Path, key: str = "val/gen_cls_acc") -> float | None:
    last = None
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if key in r:
            last = r[key]
    return last


def row_of(out: Path, name: str, seed: int, init: str | None = None) -> dict:
    s1, s2 = out / f"{name}_s{seed}_stage1", out / f"{name}_s{seed}_stage2"
    r = json.loads((s2 / "results.json").read_text())
    row = {"encoder": name, "seed": seed, "init": init, **{k: r.get(k) for k in KEYS}}
    row["val_gen_cls_acc"] = val_metric(s2)
    row["energy_snn_mj"] = (r.get("energy_encoder") or {}).get("energy_snn_mj")
    row["wall_s"] = sum(json.loads((d / "results.json").read_text())["wall_seconds"] for d in (s1, s2))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--encoder", action="append", required=True, metavar="NAME=PATH|scratch")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--stage1-epochs", type=int, default=3)
    ap.add_argument("--stage2-epochs", type=int, default=5)
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for both stages"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = {spec.partition("=")[0]: i for i, spec in enumerate(args.encoder)}
    for spec in args.encoder:
        name, _, path = spec.partition("=")
        for seed in args.seeds:
            init = path.replace("{seed}", str(seed))
            base = [sys.executable, "-m", "svl", "finetune", "task=language", f"train.seed={seed}", *args.set]
            s1, s2 = out / f"{name}_s{seed}_stage1", out / f"{name}_s{seed}_stage2"
            if not (s1 / "results.json").exists():
                run_logged(
                    [
                        *base,
                        f"out_dir={s1}",
                        f"init={init}",
                        f"train.epochs={args.stage1_epochs}",
                        "--overwrite",
                    ],
                    s1,
                    args.threads,
                )
            if not (s2 / "results.json").exists():
                run_logged(
                    [
                        *base,
                        "stage=2",
                        f"out_dir={s2}",
                        f"init={s1 / 'final.safetensors'}",
                        f"train.epochs={args.stage2_epochs}",
                        "--overwrite",
                    ],
                    s2,
                    args.threads,
                )
            print(json.dumps(row_of(out, name, seed, init)), flush=True)
    # every finished run in OUT, so lanes started separately on one OUT end in one table
    runs = [re.fullmatch(r"(.*)_s(\d+)_stage2", d.name) for d in sorted(out.glob("*_stage2"))]
    rows = [row_of(out, m[1], int(m[2])) for m in runs if m and (out / m[0] / "results.json").exists()]
    rows.sort(key=lambda r: (order.get(r["encoder"], 99), r["seed"]))
    lines = [
        "| encoder | seeds | gen. cls. | probe | gap | yes/no | choice | caption sim. | val gen. cls. "
        "| val probe | mJ/object |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["encoder"] for r in rows):
        rs = [r for r in rows if r["encoder"] == name]

        def ms(key: str, scale: float = 100.0, rs: list = rs) -> str:
            return mean_std([r[key] * scale for r in rs if r.get(key) is not None], 4 if scale == 1.0 else 2)

        gaps = [100 * (r["gen_cls_acc"] - r["probe_acc"]) for r in rs]
        gap = mean_std(gaps)
        lines.append(
            f"| {name} | {len(rs)} | {ms('gen_cls_acc')} | {ms('probe_acc')} | {gap} | {ms('yesno_em')} | "
            f"{ms('choice_em')} | {ms('caption_similarity', 1.0)} | {ms('val_gen_cls_acc')} | "
            f"{ms('probe_val_acc')} | {ms('energy_snn_mj', 1.0)} |"
        )
    write_summary(out, "\n".join(lines), rows)


if __name__ == "__main__":
    main()
