"""`svl energy`: per-layer FLOPs, synaptic operations and energy."""

from __future__ import annotations

import argparse
from pathlib import Path


# ----------------------------------------------------------------------------- svl energy
def run_energy_command(args: argparse.Namespace) -> int:
    """Handler of ``svl energy``: measure, print the table, write the JSON / PNG asked for."""
    from svl.energy import EnergyTable, energy_report

    if args.unit != "flops" and args.convention != "exact":
        raise ValueError(f"--convention {args.convention} counts FLOPs: use it with --unit flops")

    table = EnergyTable.preset(args.energy, e_mac=args.e_mac, e_ac=args.e_ac)
    report = energy_report(
        args.model,
        args.checkpoint,
        args.head,
        data=args.data,
        random_points=args.random_points,
        split=args.split,
        batch_size=args.batch_size,
        batches=args.batches,
        convention=args.convention,
        energy=table,
        mode=args.mode,
        seed=args.seed,
        unit=args.unit,
    )
    print(report.table())
    json_path, plot_path = args.json, args.plot
    if args.output:  # the spelling every command shares: a folder with both files
        out = Path(args.output)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: -o/--output must be a folder (it exists and is a file)")
        out.mkdir(parents=True, exist_ok=True)
        json_path, plot_path = json_path or out / "energy.json", plot_path or out / "energy.png"
    if json_path:
        report.to_json(str(json_path))
        print(f"wrote {json_path}")
    if plot_path:
        report.plot(str(plot_path))
        print(f"wrote {plot_path}")
    return 0


def _add_energy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "energy",
        help="per-layer FLOPs, synaptic operations and energy of a model (SNN vs ANN-equivalent)",
        description="Count FLOPs and synaptic operations per layer from a real forward pass (actual "
        "spike counts, real sparse kernel maps) and price them: E_MAC x FLOPs of real-valued-input "
        "layers + E_AC x SOPs of spiking layers (SOP = rate x FLOPs x T), against the ANN-equivalent "
        "E_MAC x FLOPs. --unit macs counts both sides per synaptic event instead: MACs for the ANN, "
        "one accumulate per spike per synapse for the SNN.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="registered model name (see svl.list_models())")
    src.add_argument("--checkpoint", metavar="CKPT", help="svl checkpoint (.safetensors) naming its model")
    p.add_argument("--head", metavar="HEAD", default=None, help="Rep-VLI zero-shot head file to fold in")
    inp = p.add_mutually_exclusive_group(required=True)
    inp.add_argument(
        "--data",
        metavar="DATASET",
        help="measure on real samples of this dataset (modelnet40; an image classifier: digits, ...)",
    )
    inp.add_argument(
        "--random-points",
        metavar="N",
        type=int,
        help="one random input of N points, shaped as the checkpoint reads (voxel encoders: the E-3DSNN "
        "release's 64^3 integer grid; events: N events on the trained sensor; a detector: N points in "
        "its range; an image classifier: one image of the trained size, N unused)",
    )
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    p.add_argument("--batches", type=int, default=1, help="batches to measure (default 1)")
    p.add_argument(
        "--convention",
        default="exact",
        choices=("exact", "e3dsnn-release", "e3dsnn-release-intended"),
        help="exact (default) or count the way the E-3DSNN release does",
    )
    p.add_argument(
        "--unit",
        default="flops",
        choices=("flops", "macs"),
        help="what both sides count: flops (default, SPEC §7: ANN FLOPs, SOP = rate x FLOPs x T) or "
        "macs (per synaptic event: ANN MACs, SNN accumulates); same SNN/ANN ratio, energies ~halve",
    )
    p.add_argument("--energy", default="fp32", choices=("fp32", "int8", "int32"), help="45 nm pJ table")
    p.add_argument("--e-mac", type=float, default=None, help="override E_MAC in pJ")
    p.add_argument("--e-ac", type=float, default=None, help="override E_AC in pJ")
    p.add_argument("--mode", default="integer", choices=("integer", "binary"), help="spike mode to run in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "-o", "--output", metavar="DIR", default=None, help="write energy.json and energy.png into DIR"
    )
    p.add_argument("--json", metavar="OUT.json", default=None, help="write the report as JSON")
    p.add_argument("--plot", metavar="OUT.png", default=None, help="bar chart of energy and firing rate")
    p.set_defaults(func=run_energy_command)


def register(sub: argparse._SubParsersAction) -> None:
    _add_energy(sub)
