"""``organsam atlas``: build an atlas file (the location model text prompts are placed with) from a labelled
volume, and show which atlas ``segment`` uses."""

from __future__ import annotations

import argparse
import json
import shlex


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "atlas",
        help="build or inspect the location atlas used to place text-prompted organs",
        description="Build an atlas file from a labelled CT, or show the atlas segment uses "
        "(set ORGANSAM_ATLAS to an atlas file to use your own).",
    )
    asub = p.add_subparsers(dest="atlas_command", metavar="ACTION", required=True)
    b = asub.add_parser("build", help="write an atlas file from a CT and its label map")
    b.add_argument("--image", required=True, help="the CT (HU): NIfTI, NRRD/MHA or a DICOM folder")
    b.add_argument("--labels", required=True, help="its label map on the same grid")
    b.add_argument(
        "--labelmap",
        required=True,
        help="the label map's classes: a packaged name (e.g. totalsegmentator_v2, amos22; see "
        "`organsam organs --help`) or a JSON file of label value -> class name",
    )
    b.add_argument("-o", "--output", required=True, help="the atlas file to write (.npz)")
    b.add_argument("--name", default=None, help="a short name (default: the image's folder name)")
    b.add_argument("--source", default="", help="where the volume comes from (recorded in the file)")
    b.add_argument("--licence", default="", help="the volume's licence (recorded in the file)")
    i = asub.add_parser("info", help="show an atlas file, or the one segment uses")
    i.add_argument("path", nargs="?", default=None, help="an atlas file (default: the one segment uses)")
    i.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from organsam.priors.atlas import Atlas, atlas_source, default_atlas

    if args.atlas_command == "build":
        atlas = Atlas.from_files(args.image, args.labels, args.labelmap, name=args.name)
        if not atlas.organ_ids():
            raise ValueError(
                f"{args.labels}: no label value maps to a vocabulary organ with the label map "
                f"{args.labelmap!r}; pass the label map the file was made with (--labelmap)"
            )
        words = [
            "organsam",
            "atlas",
            "build",
            "--image",
            args.image,
            "--labels",
            args.labels,
            "--labelmap",
            args.labelmap,
            "-o",
            args.output,
            *(["--name", args.name] if args.name else []),
        ]
        out = atlas.save(
            args.output, source=args.source, licence=args.licence, command=" ".join(shlex.quote(str(w)) for w in words)
        )
        print(
            f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB): {len(atlas.organ_ids())} organs, "
            f"{atlas.image.shape} voxels at {atlas.spacing} mm"
        )
        return 0
    if args.path:
        atlas, where = Atlas.load(args.path), str(args.path)
    else:
        atlas, where = default_atlas(), atlas_source()
    meta = {k: v for k, v in atlas.meta.items() if k not in ("name", "format")}
    info = {
        "atlas": where,
        "name": atlas.name,
        "shape_zyx": list(atlas.image.shape),
        "spacing_zyx_mm": list(atlas.spacing),
        "organs": atlas.organ_ids(),
        **meta,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"{info['atlas']}: {atlas.name}, {atlas.image.shape} voxels at {atlas.spacing} mm, "
            f"{len(info['organs'])} organs"
        )
        print("  " + ", ".join(info["organs"]))
        if meta.get("source"):
            print(f"  source: {meta['source']} ({meta.get('licence') or 'licence not recorded'})")
    return 0
