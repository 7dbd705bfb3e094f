"""The `iqa-factory` command line."""

import argparse
import json
import sys
import time
from pathlib import Path

import distortions
from pipeline.embedded import EMBEDDED_PHOTOS
from pipeline.images import EMBEDDED_PREFIX, read_rgb
from pipeline.sizing import TargetSize, cover_and_crop


def _list_bank(args: argparse.Namespace) -> int:
    """Print the distortion bank: id, name, category and the five levels' parameters."""
    for d in distortions.all():
        levels = " | ".join(d.describe(level) for level in distortions.LEVELS)
        print(f"{d.id:2d}  {d.name:18s} {d.category:12s} {levels}")
    return 0


def _prepared(source: str, size: TargetSize, allow_upscale: bool):
    return cover_and_crop(read_rgb(source), size, allow_upscale)


def _sheet(args: argparse.Namespace) -> int:
    """Render the contact sheet of one image."""
    from pipeline.contact_sheet import render_contact_sheet

    img = _prepared(args.image, args.size, args.allow_upscale)
    ref_id = Path(args.image.removeprefix(EMBEDDED_PREFIX)).stem
    sheet = render_contact_sheet(img, seed=args.seed, ref_id=ref_id, cell_width=args.cell_width)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height})")
    return 0


def _generate(args: argparse.Namespace) -> int:
    """Stand-in until the Ray pipeline lands: contact sheets of the embedded photos."""
    from pipeline.contact_sheet import render_contact_sheet

    out = Path(args.out) / "sheets"
    out.mkdir(parents=True, exist_ok=True)
    print("note: the Ray generation pipeline is not built yet; this run applies the whole "
          f"bank to the {len(EMBEDDED_PHOTOS)} embedded photos and writes contact sheets.")
    started = time.perf_counter()
    for name in EMBEDDED_PHOTOS:
        img = _prepared(EMBEDDED_PREFIX + name, args.size, allow_upscale=False)
        render_contact_sheet(img, seed=args.seed, ref_id=name).save(out / f"{name}.png")
        print(f"  {out / (name + '.png')}")
    summary = {"photos": len(EMBEDDED_PHOTOS), "versions_per_photo": 165,
               "seconds": round(time.perf_counter() - started, 1), "sheets": str(out)}
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iqa-factory",
        description="Distort pristine photos (33 types x 5 levels), label them with ten "
                    "full-reference metrics, and write WebDataset shards for IQA pretraining.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list the 33 x 5 distortion bank",
                                  description=_list_bank.__doc__)
    listing.set_defaults(run=_list_bank)

    sheet = commands.add_parser(
        "sheet", help="render all 165 versions of one image as a labelled grid (PNG)",
        description="Render every distortion at every level of one image in a 33 x 5 grid. "
                    "IMAGE is a file or embedded:NAME (" + ", ".join(EMBEDDED_PHOTOS) + ").")
    sheet.add_argument("image", metavar="IMAGE")
    sheet.add_argument("-o", "--output", type=Path, default=Path("sheet.png"),
                       help="where to write the PNG (default: sheet.png)")
    sheet.add_argument("--cell-width", type=int, default=160,
                       help="width of each thumbnail in pixels (default 160)")
    _add_image_options(sheet)
    sheet.set_defaults(run=_sheet)

    generate = commands.add_parser(
        "generate", help="run the generation job (for now: contact sheets of the embedded photos)",
        description=_generate.__doc__)
    generate.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    _add_image_options(generate)
    generate.set_defaults(run=_generate)
    return parser


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=TargetSize.parse, default=TargetSize(),
                        help="target WxH: cover by area scaling, then centre-crop "
                             "(default 512x384)")
    parser.add_argument("--allow-upscale", action="store_true",
                        help="upscale sources smaller than the target instead of refusing them")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (distortions.DistortionError, ValueError, OSError) as error:
        print(f"iqa-factory: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
