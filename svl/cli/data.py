"""`svl data info|render`: what a file or dataset holds, and pictures of it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from svl.cli._common import add_sensor_size_arg

# what --format takes; the library checks the name and says which formats it knows
FORMATS_HELP = (
    "how to read the file: auto (default: by extension and content; a .bin by its bytes), "
    "events: nmnist, aedat, aedat4, prophesee, npy, npz; point clouds: kitti, nuscenes, waymo "
    "(LiDAR .bin of 4, 5, 6 floats), ply, obj, off, stl, text, npy, npz, pcd"
)


def _missing_package(e: ImportError) -> ValueError:
    """An optional reader's missing package is a usage problem: report it as one (exit code 2)."""
    return ValueError(str(e))


def _cmd_data_info(args: argparse.Namespace) -> int:
    from svl.data.inspect import dataset_info, file_info, is_file_like

    kwargs = {"variant": args.variant} if getattr(args, "variant", None) else {}
    if is_file_like(args.path):
        try:
            info = file_info(args.path, index=args.index, format=args.format, sensor_size=args.sensor_size)
        except ImportError as e:
            raise _missing_package(e) from None
    else:
        info = dataset_info(args.path, root=args.root, **kwargs)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    if "dataset" in info:
        print(f"dataset {info['dataset']}: {len(info['classes'])} classes")
        for sp, d in info["splits"].items():
            keys = ", ".join(f"{k} {tuple(v)}" for k, v in d["sample_keys"].items())
            seg = d.get("segment_classes_in_sample")
            held = f" (holds {seg} point classes)" if seg is not None else ""
            print(
                f"  {sp:<12} {d['samples']:>6} samples, {d['classes_present']} classes; sample{held}: {keys}"
            )
        for attr in ("seen_classes", "unseen_classes"):
            if attr in info:
                print(f"  {attr} ({len(info[attr])}): {', '.join(info[attr])}")
        return 0
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def _cmd_data_render(args: argparse.Namespace) -> int:
    """Render one cloud (file, or dataset sample) from several views into a PNG grid; an event file
    as its accumulated frame beside an x-y-t scatter."""
    from svl.data.inspect import is_event_file, is_file_like, load_sample, render_events

    out = Path(args.output)
    if is_file_like(args.path) and is_event_file(args.path, args.format):
        try:
            render_events(args.path, out, format=args.format, sensor_size=args.sensor_size)
        except ImportError as e:
            raise _missing_package(e) from None
        print(f"wrote {out} (accumulated frame and x-y-t view of {Path(args.path).name})")
        return 0
    import torch

    from svl.data.render import render_views, save_view_grid

    s, title = load_sample(args.path, args.index, args.up_axis, args.root, args.variant, format=args.format)
    if s.get("events") is not None:  # a sample of an event dataset: its stream, as for event files
        from svl.data.readers.events import EventFile

        ef = EventFile(s["events"], s["sensor_size"], "dataset", Path(args.path), "dataset")
        render_events(ef, out, title=title)
        print(f"wrote {out} (accumulated frame and x-y-t view of {title})")
        return 0
    xyz = torch.as_tensor(s["xyz"])[None]
    rgb = torch.as_tensor(s["rgb"])[None] if s.get("rgb") is not None else None
    save_view_grid(render_views(xyz, rgb, num_views=args.views, size=args.size), out)
    print(f"wrote {out} ({args.views} views of {title}, {len(s['xyz'])} points)")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect point-cloud files and datasets (info, render)")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    pi = dsub.add_parser(
        "info",
        help="what a file (.ply .obj .off .stl .xyz .txt .csv .npy .npz .pcd .bin, or events: .bin .bs2 "
        ".aedat .aedat4 .dat .raw) or dataset holds",
        description="PATH is a point-cloud/mesh file, an event-camera file or a dataset name, e.g. "
        "modelnet40, modelnet40_zsl, modelnet40_zsl:val, scanobjectnn (with --variant).",
    )
    pi.add_argument("path", metavar="PATH", help="file or dataset name[:split]")
    pi.add_argument("--index", type=int, default=None, help="cloud index in a multi-cloud .npz/.npy")
    pi.add_argument("--root", default=None, help="dataset root (default: $SVL_DATA or ../shared/data)")
    pi.add_argument("--variant", default=None, help="ScanObjectNN variant: OBJ_ONLY, OBJ_BG or PB_T50_RS")
    pi.add_argument("--json", action="store_true", help="print as JSON")
    pi.add_argument("--format", default="auto", metavar="FORMAT", help=FORMATS_HELP)
    add_sensor_size_arg(pi)
    pi.set_defaults(func=_cmd_data_info)
    pr = dsub.add_parser(
        "render",
        help="render a cloud from several views into a PNG grid (an event file: accumulated frame + x-y-t)",
    )
    pr.add_argument("path", metavar="PATH", help="file or dataset name[:split] (with --index)")
    pr.add_argument("-o", "--output", required=True, metavar="PNG", help="image to write")
    pr.add_argument("--index", type=int, default=None, help="cloud index (multi-cloud file or dataset)")
    pr.add_argument("--views", type=int, default=4, help="views around the gravity axis (default 4)")
    pr.add_argument("--size", type=int, default=256, help="view size in pixels (default 256)")
    pr.add_argument("--up-axis", default="z", help="the file's up axis, rotated to z-up (default z)")
    pr.add_argument("--root", default=None, help="dataset root")
    pr.add_argument("--variant", default=None, help="ScanObjectNN variant")
    pr.add_argument("--format", default="auto", metavar="FORMAT", help=FORMATS_HELP)
    add_sensor_size_arg(pr)
    pr.set_defaults(func=_cmd_data_render)


def register(sub: argparse._SubParsersAction) -> None:
    _add_data(sub)
