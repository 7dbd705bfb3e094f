"""The `iqa-factory` command line."""

import argparse
import dataclasses
import functools
import math
import os
import sys
import tarfile
from pathlib import Path

import pyarrow.fs as pafs

import distortions
from distortions.validation import MIN_LONG_SIDE
from pipeline.config import SOURCE_KINDS, SPEC_SHARD_REFS, RunConfig, composes_undoing_pairs
from pipeline.embedded import EMBEDDED_PHOTOS
from pipeline.errors import PipelineError
from pipeline.plan import read_plan
from pipeline.scheduling import CPUS_PER_CPU_ACTOR
from pipeline.sizing import NATIVE, TargetSize, cover_and_crop, parse_size
from pipeline.sources import read_rgb, single
from shards.arguments import integer_at_least
from shards.keys import ref_ids
from shards.layout import DEFAULT_STORE, PLAN_FILE, STORE_MODES
from shards.lease import LeaseError
from shards.stopping import stops_as_interrupts, terminated
from shards.storage import Location, file_in_the_way, redact
from shards.words import a_few

DEEP_SAMPLES = 8  # versions `inspect --deep` replays when no count is given
RESUMABLE = ("generate", "convert", "materialize")  # the same command finishes what it began


def _list_bank(args: argparse.Namespace) -> int:
    """Print every registered distortion (the paper's 33, then ids 34 and up): id, name,
    category and the five levels' parameters."""
    for d in distortions.registered():
        levels = " | ".join(d.describe(level) for level in distortions.LEVELS)
        print(f"{d.id:2d}  {d.name:18s} {d.category:12s} {levels}")
    return 0


def _prepared(source: str, size: TargetSize | str, allow_upscale: bool):
    """A source at the size generate would give it (an upscale bounded as generate's is)."""
    from shards.decode import DEFAULT_MAX_PIXELS

    pixels = read_rgb(source)
    return pixels if size == NATIVE else cover_and_crop(pixels, size, allow_upscale,
                                                        max_pixels=DEFAULT_MAX_PIXELS)


def _sheet(args: argparse.Namespace) -> int:
    """Render the contact sheet of one image."""
    from pipeline.commands.contact_sheet import (
        check_picture_path,
        check_picture_size,
        render_contact_sheet,
        render_shard_sheet,
    )

    check_picture_path(args.output)  # before minutes of rendering
    image_options = [name for name, value in (("--size", args.size), ("--seed", args.seed),
                                              ("--allow-upscale", args.allow_upscale or None))
                     if value is not None]
    fits = functools.partial(check_picture_size, args.output)
    if args.image.lower().endswith((".tar", ".tar.gz")):
        if image_options:
            shape = "shape" if len(image_options) > 1 else "shapes"
            raise ValueError(f"{', '.join(image_options)} {shape} the versions made from an "
                             "image; a shard's sheet shows them as the shard stores them")
        sheet, composed = render_shard_sheet(args.image, args.ref_id,
                                             cell_width=args.cell_width, check_size=fits)
        if composed:
            print(f"note: {composed} composed version(s) left out: a chain of types has no "
                  "cell in the type x level grid")
    else:
        if args.ref_id is not None:
            raise ValueError("--ref-id chooses a reference of a shard; an image's sheet shows "
                             "that image")
        if args.size == NATIVE and args.allow_upscale:
            raise ValueError("--allow-upscale applies to a target size (--size WxH): native "
                             "keeps the image's own size")
        img = _prepared(args.image, args.size or TargetSize(), args.allow_upscale)
        ref_id = ref_ids([single(args.image).stem])[0]  # its versions' seeds, as generate's
        sheet, failures = render_contact_sheet(img, seed=args.seed or 0, ref_id=ref_id,
                                               cell_width=args.cell_width, check_size=fits)
        if failures:
            print(f"note: {len(failures)} version(s) failed, their cells say so: " + a_few(
                [f"{distortions.get(i).name} level {level}: {why}"
                 for (i, level), why in failures.items()], separator="; "))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height})")
    return 0


LONGEST_RANGE = 1000  # numbers a range of ids or levels may span (the bank holds 43 types)


def _ints(text: str) -> tuple[int, ...]:
    """'1,3,5-8' -> (1, 3, 5, 6, 7, 8); a clear argparse error for anything else."""
    values = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number or a range such as "
                                             "5-8") from None
        if last < first:
            raise argparse.ArgumentTypeError(f"the range {part!r} runs backwards")
        if last - first >= LONGEST_RANGE:  # a typo (1-50000 for 1-5): not built, nor listed
            raise argparse.ArgumentTypeError(f"the range {part!r} spans {last - first + 1} "
                                             f"numbers, more than the {LONGEST_RANGE} any "
                                             "option here takes")
        values += range(first, last + 1)
    return tuple(values)


def _once(values: tuple, shown=str) -> tuple:
    """`values`, or an argparse error naming those given more than once (a typo for another:
    collapsing them would hide it)."""
    repeated = sorted({value for value in values if values.count(value) > 1}, key=values.index)
    if repeated:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(shown, repeated))} given more than once")
    return values


def _named(text: str) -> str:
    """A --sources that names something: an empty one (an unset shell variable) would list
    the working folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("it names nothing (give a folder, a list file, a "
                                         "URI or 'embedded')")
    return text


def _levels(text: str) -> tuple[int, ...]:
    """--levels: _ints among the bank's levels 1-5."""
    values = _ints(text)
    outside = [value for value in values if value not in distortions.LEVELS]
    if outside:
        raise argparse.ArgumentTypeError(f"the levels are 1-5, not {outside}")
    return values


def _distortion_ids(text: str) -> tuple[int, ...]:
    """Ids, ranges or names: '1-5,jpeg2000,gaussian_blur'; each a registered type."""
    ids = []
    for part in (part.strip().lower() for part in text.split(",")):
        try:
            named = _ints(part) if part[:1].isdigit() else (part,)
            ids += [distortions.get(id_or_name).id for id_or_name in named]
        except distortions.UnknownDistortionError as error:
            raise argparse.ArgumentTypeError(f"{error} (`iqa-factory list` shows them)") from None
    return _once(tuple(ids), lambda i: f"{i} ({distortions.get(i).name})")


def _generate(args: argparse.Namespace) -> int:
    """Distort, label and shard a set of pristine images on Ray."""
    from pipeline.driver import ClusterOptions, generate
    from pipeline.submit import cluster_paths, submit_to_cluster

    options = ClusterOptions(  # checked here, before a job goes to a cluster
        actors=args.actors, max_in_flight=args.max_in_flight, restart=args.restart,
        verify=args.verify, take_over=args.take_over, retry_unreadable=args.retry_unreadable,
        label_timeout=args.label_timeout)
    if args.address:
        _given_config(args, undoing_apart=True)  # the options, before a job goes to a cluster
        return submit_to_cluster(args.address, sys.argv[1:],
                                 cluster_paths(args.out, args.sources, args.ensemble))
    report = generate(run_config(args), options)
    if report["sources"] and not report["sources_ok"]:
        print(f"error: none of the {report['sources']} sources could be used (the failures "
              "by reason above; failures.jsonl in the dataset says why of each)",
              file=sys.stderr)
        return 1
    return 0


def run_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of parsed `generate` arguments. What no option sets is the plan's of a
    dataset being resumed (not with --restart): its shard_refs unless --shard-refs is given,
    its types' own levels (absent in plans made before them: none), its order of the
    levels and metrics given, its chain rule (undoing_apart) and split rule (a plan
    without split_by drew splits from ids, or its ids are its names); else the shard is
    sized to the spec's (RunConfig.sized_shard_refs) and the bank gives the types' levels."""
    planned = None if getattr(args, "restart", False) else _planned_inputs(args.out)
    config = _given_config(args, _undoing_apart(args, planned),
                           split_by_name=planned is None or "split_by" in planned)
    _say_left_out(args.bank, args.distortions)
    if planned is None:
        _check_levels_apply(config)
        if args.shard_refs is None:
            config = dataclasses.replace(config, shard_refs=config.sized_shard_refs())
        return config
    own = tuple((d, tuple(levels)) for d, levels in planned.get("type_levels", ())
                if d in config.distortion_ids)
    shard_refs = planned["shard_refs"] if args.shard_refs is None else args.shard_refs
    # a dataset begun before --levels and --metrics were sorted: resumed in its plan's order
    same_sets = {name: _planned_order(planned, name, getattr(config, name))
                 for name in ("levels", "metrics")}
    return dataclasses.replace(config, shard_refs=shard_refs, type_levels=own, **same_sets)


def _undoing_apart(args: argparse.Namespace, planned: dict | None) -> bool:
    """The chain rule: False for a composing dataset planned before chains kept a type and
    its undoer apart (its plan does not say so), which is resumed with its draw."""
    if planned is None or "undoing_apart" in planned:
        return True
    return not composes_undoing_pairs(_in_bank(args.bank, args.distortions), args.compose,
                                      args.compose_share)


def _check_levels_apply(config: RunConfig) -> None:
    """A new plan's --levels (other than all five) must apply to a type: a bank may give
    every selected type its own levels (a resumed plan keeps the levels it was made with)."""
    own = dict(config.type_levels)
    if config.levels != distortions.LEVELS and all(d in own for d in config.distortion_ids):
        shown = "; ".join(f"{distortions.get(d).name} {','.join(map(str, levels))}"
                          for d, levels in sorted(own.items()))
        raise ValueError(f"--levels applies to no type: the bank {config.bank} gives each of "
                         f"its selected types its own levels ({shown}); leave it out")


def _planned_order(planned: dict, name: str, given: tuple) -> tuple:
    """`given` in the order the plan lists the same values (`given` where it lists others,
    or none it can compare: generate then names the difference)."""
    recorded = planned.get(name)
    try:
        same = isinstance(recorded, list) and sorted(recorded) == sorted(given)
    except TypeError:  # values of mixed types: a damaged plan
        same = False
    return tuple(recorded) if same else given


def _planned_inputs(out: str) -> dict | None:
    """The inputs of the plan already in `out` (None: no readable plan there)."""
    try:
        location = Location.parse(out)
        if location.exists(location.path(PLAN_FILE)):
            return read_plan(location).inputs
    except (OSError, ValueError):
        pass  # generate names a damaged plan itself
    return None


def _given_config(args: argparse.Namespace, undoing_apart: bool,
                  split_by_name: bool = True) -> RunConfig:
    if args.metrics == () and args.ensemble is not None:  # (a recorded one is still read)
        raise ValueError("--ensemble makes each version's Q from its scores, and --metrics "
                         "none computes none: drop one of them")
    return RunConfig(
        sources=args.sources, out=args.out, seed=args.seed, size=args.size,
        allow_upscale=args.allow_upscale,
        shard_refs=SPEC_SHARD_REFS if args.shard_refs is None else args.shard_refs,
        limit=args.limit,
        distortion_ids=_in_bank(args.bank, args.distortions), levels=tuple(sorted(args.levels)),
        metrics=(_ensemble_metrics(args.ensemble) if args.metrics is None else
                 _in_registry_order(args.metrics)),
        allow_missing_metrics=args.allow_missing_metrics,
        ensemble_file=args.ensemble, max_pixels=args.max_pixels, bank=args.bank,
        versions_per_ref=args.versions_per_ref, max_side=args.max_side,
        source_kind=args.source_kind, compose=args.compose, store=args.store,
        keep_pngs=_kept_pngs(args.keep_pngs), compose_share=args.compose_share,
        undoing_apart=undoing_apart, split_by_name=split_by_name)


def _kept_pngs(ids: tuple[int, ...] | None) -> tuple[int, ...]:
    """--keep-pngs as recorded: sorted, without a learned type, which hybrid keeps anyway
    (recorded, it would make one dataset under two plan digests; refused on the command
    line, where a recorded plan's is read as it is)."""
    kept = tuple(sorted(set(ids or ())))
    learned = [d for d in kept if distortions.get(d).learned]
    if learned:
        raise ValueError(f"--keep-pngs {learned}: the learned denoiser's versions keep their "
                         "PNG in hybrid already: leave them out")
    return kept


def _compose(text: str) -> tuple[int, int]:
    """--compose K or K-M: (K, M)."""
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--compose takes K or K-M (e.g. 2 or 2-4), got "
                                         f"{text!r}") from None


def _fraction(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a fraction in [0, 1] (e.g. 0.1), got {text!r}")
    return value


def _size(text: str) -> TargetSize | str:
    """--size WxH or native, with parse_size's reason where it is neither."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _ensemble_metrics(ensemble: str | None) -> tuple[str, ...]:
    """The metrics an ensemble weighs (the default ensemble's ten without --ensemble)."""
    from labelers.ensemble import load
    from labelers.registry import AVAILABLE_METRICS, METRICS

    if ensemble is None:
        return METRICS
    weighed = load(ensemble).weights
    return tuple(key for key in AVAILABLE_METRICS if key in weighed)


def _in_registry_order(metrics: tuple[str, ...]) -> tuple[str, ...]:
    """--metrics in the registry's order (as --distortions in the bank's, --levels sorted):
    one dataset whatever order they are typed in (the order changed the plan's digest, and
    --levels the samples' order or, with --compose, which were drawn); unknown keys kept
    last, for RunConfig to name."""
    from labelers.registry import AVAILABLE_METRICS

    return (tuple(key for key in AVAILABLE_METRICS if key in metrics)
            + tuple(key for key in metrics if key not in AVAILABLE_METRICS))


def _in_bank(bank: str, chosen: tuple[int, ...] | None) -> tuple[int, ...]:
    """The named bank's types, narrowed to --distortions where given."""
    ids = distortions.bank_ids(bank)
    if chosen is None:
        return ids
    kept = tuple(i for i in ids if i in chosen)
    if not kept:
        raise ValueError(f"none of --distortions {list(chosen)} is in the bank {bank!r}")
    return kept


def _say_left_out(bank: str, chosen: tuple[int, ...] | None) -> None:
    """A note naming the types of --distortions that the bank does not hold (--distortions
    narrows the bank: they are left out)."""
    outside = sorted(set(chosen or ()) - set(distortions.bank_ids(bank)))
    if outside:
        named = ", ".join(f"{d} ({distortions.get(d).name})" for d in outside)
        print(f"note: --distortions {named} not in the bank {bank!r}: left out (--bank "
              "registered holds every type)")


def _metrics(text: str) -> tuple[str, ...]:
    """Comma-separated metric keys; 'none' for a label-free run."""
    return () if text.strip().lower() == "none" else _once(tuple(
        key.strip().lower() for key in text.split(",")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iqa-factory",
        description=f"Distort pristine photos (the paper's {len(distortions.BANKS['all'])} "
                    f"types x 5 levels by default, of {len(distortions.registered())} "
                    "registered), label them with ten "
                    "full-reference metrics, and write WebDataset shards for IQA pretraining.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # listed here; the entry point (iqa_factory.cli) hands `train` to the training stage
    commands.add_parser("train", help="pretrain, fine-tune, evaluate IQA models "
                                      "(iqa-factory train --help)", add_help=False)

    listing = commands.add_parser("list", help="list the distortion types x 5 levels",
                                  description=_list_bank.__doc__)
    listing.set_defaults(run=_list_bank)

    _add_sheet(commands)
    _add_generate(commands)
    _add_inspect(commands)
    _add_store_commands(commands)
    _add_validate_levels(commands)
    _add_label_commands(commands)
    return parser


def _add_sheet(commands) -> None:
    sheet = commands.add_parser(
        "sheet", help="render every version of one image as a labelled grid (a picture)",
        description="Render every distortion type at every level of one image, a row per "
                    f"type (the bank's {len(distortions.registered())} x 5). "
                    "IMAGE is a file or embedded:NAME (" + ", ".join(EMBEDDED_PHOTOS) + "), "
                    "or a shard (.tar, or .tar.gz of a recipes or hybrid dataset): then one "
                    "of its references as stored, with labels.")
    sheet.add_argument("image", metavar="IMAGE")
    sheet.add_argument("-o", "--output", type=Path, default=Path("sheet.png"),
                       help="where to write the picture, its format by its extension "
                            "(.png, .jpg, .webp, ...; default: sheet.png)")
    sheet.add_argument("--cell-width", type=_cell_width, default=160,
                       help="width of each thumbnail in pixels (default 160)")
    sheet.add_argument("--ref-id", help="with a shard: which reference (default its first)")
    _add_image_options(sheet)
    sheet.set_defaults(run=_sheet, size=None, seed=None)  # None: not given (refused for shards)


def _add_inspect(commands) -> None:
    inspecting = commands.add_parser(
        "inspect", help="summarise and validate a dataset (tar, parquet, stats, plan agree)",
        description=_inspect.__doc__)
    inspecting.add_argument("out", metavar="OUT")
    inspecting.add_argument("--deep", type=_count, nargs="?", const=DEEP_SAMPLES, default=0,
                            metavar="N",
                            help="also replay N sampled versions from their recipes and "
                                 "re-score them (default 8)")
    inspecting.add_argument("--sample-seed", type=_count, default=0, metavar="SEED",
                            help="the seed that draws --deep's sample (default 0: the same "
                                 "versions each time; another seed checks others)")
    inspecting.add_argument("--workers", type=_positive, default=os.cpu_count() or 1,
                            metavar="N",
                            help="processes that check shards at once, each given 2 GiB "
                                 "of tars at least: a smaller dataset is checked in one "
                                 f"(default: this machine's CPUs, {os.cpu_count() or 1})")
    inspecting.set_defaults(run=_inspect)


def _add_store_commands(commands) -> None:
    """materialize and convert: a dataset rewritten in another storage mode."""
    materializing = commands.add_parser(
        "materialize", help="turn a recipes or hybrid dataset into an images one",
        description="Replay every version a recipes or hybrid dataset stores as its recipe, "
                    "check it against its SHA-256 and write an images dataset: the same tars, "
                    "byte for byte, as generate --store images. Resumes: complete shards of "
                    "OUT_IMAGES are skipped.")
    materializing.add_argument("source", metavar="OUT_RECIPES")
    materializing.add_argument("target", metavar="OUT_IMAGES")
    materializing.add_argument("--workers", type=_positive, default=1,
                               help="shards replayed at once, in processes (default 1)")
    _add_take_over(materializing, "OUT_IMAGES")
    materializing.set_defaults(run=_convert, store=DEFAULT_STORE, keep_pngs=None)
    converting = commands.add_parser(
        "convert", help="rewrite a dataset in another storage mode (--store, --keep-pngs)",
        description="Write a finished dataset in another storage mode: the same tars, byte "
                    "for byte, as generate --store MODE. A version the target keeps as a PNG "
                    "is replayed and checked against its SHA-256; a PNG the target drops is "
                    "dropped only once its replay here gives its pixels. Ship recipes, then "
                    "convert where the data is trained on. Resumes: complete shards of TARGET "
                    "are skipped.")
    converting.add_argument("source", metavar="SOURCE")
    converting.add_argument("target", metavar="TARGET")
    converting.add_argument("--store", choices=STORE_MODES, required=True,
                            help="the target's storage mode")
    converting.add_argument("--keep-pngs", type=_distortion_ids, metavar="TYPES",
                            help="with --store hybrid: also keep these types' PNGs")
    converting.add_argument("--workers", type=_positive, default=1,
                            help="shards converted at once, in processes (default 1)")
    _add_take_over(converting, "TARGET")
    converting.set_defaults(run=_convert)


def _add_validate_levels(commands) -> None:
    levels = commands.add_parser(
        "validate-levels", help="check mean labels against each type's level order: falling "
                                "with the level, or as the spec orders two-sided types "
                                "(table and plot)",
        description=_validate_levels.__doc__)
    levels.add_argument("out", metavar="OUT", nargs="?", default="out/demo",
                        help="the dataset (default out/demo, what make generate writes)")
    levels.add_argument("--target", help="the folder to write them into (default: the "
                                          "dataset's own, OUT; a local folder where OUT is "
                                          "an object store: the current one)")
    levels.set_defaults(run=_validate_levels)


def _add_generate(commands) -> None:
    generate = commands.add_parser(  # no abbreviations: --addr would travel in the job's line
        "generate", allow_abbrev=False,
        help="distort, label and shard pristine images on Ray (local or a cluster)",
        description=_generate.__doc__ + " Local Ray by default (dashboard on 127.0.0.1:8265); "
        "--address http://127.0.0.1:8265 (a tunnel to a cluster's dashboard: `ray dashboard`, "
        "a port-forward) submits the same command to the cluster as a Ray job.")
    _add_source_options(generate.add_argument_group("sources and sizes"))
    _add_bank_options(generate.add_argument_group("distortions"))
    _add_label_options(generate.add_argument_group("labels"))
    _add_storage_options(generate.add_argument_group("storage"))
    _add_resume_options(generate.add_argument_group("resume"))
    _add_cluster_options(generate.add_argument_group("cluster"))
    generate.set_defaults(run=_generate)


def _add_source_options(group) -> None:
    from shards.decode import DEFAULT_MAX_PIXELS

    group.add_argument("--sources", default="embedded", type=_named,
                       help="a folder, a list file, an object-store URI (s3://...), or "
                            "'embedded' for the photos scikit-image ships (default)")
    group.add_argument("--out", default="out/demo",
                       help="output dataset (path or URI; default out/demo)")
    _add_image_options(group)
    group.add_argument("--max-side", type=integer_at_least(MIN_LONG_SIDE), metavar="N",
                       help="with --size native: downscale sources whose long side exceeds "
                            "N (never below the bank's minimum)")
    group.add_argument("--source-kind", choices=SOURCE_KINDS, default="synthetic",
                       help="what the sources are, recorded per reference: synthetic "
                            "(pristine photos to distort, default) or authentic")
    group.add_argument("--limit", type=_positive, help="use only the first N sources")
    group.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                       help="refuse sources with more pixels (decompression bombs; "
                            f"default {DEFAULT_MAX_PIXELS:,})")


def _add_bank_options(group) -> None:
    group.add_argument("--bank", choices=tuple(distortions.BANKS), default="all",
                       help="a named bank: all (the paper's 33 types, default), kadid25 "
                            "(the KADID-10k types), mt4 (JPEG, JPEG 2000, Gaussian blur, "
                            "white noise), reiqa (Re-IQA's 26: 21 KADID types, its resize "
                            "and denoise types), dbcnn (the multi-task method's 9), "
                            "dbcnn_authentic (its authentic mode's 7, for --compose), "
                            f"registered (all {len(distortions.registered())})")
    group.add_argument("--distortions", type=_distortion_ids,
                       help="narrow the bank: ids, ranges or names (default: all of it)")
    group.add_argument("--levels", type=_levels, default=distortions.LEVELS,
                       help="subset of levels, e.g. 1,3,5 (default 1-5); a bank's types "
                            "with levels of their own keep them (dbcnn: exposure at 2, 4, "
                            "gaussian_blur at 2-5)")
    group.add_argument("--versions-per-ref", type=_positive, metavar="K",
                       help="K distinct types per reference, drawn (seeded by the reference) "
                            "from those selected, each at one drawn level (default: the "
                            "full grid)")
    group.add_argument("--compose", type=_compose, metavar="K[-M]",
                       help="each version a chain of K (to M) distinct types drawn per "
                            "version, each at a drawn level, applied in order; versions "
                            "per reference: --versions-per-ref, or one per selected type")
    group.add_argument("--compose-share", type=_fraction, default=0.0, metavar="P",
                       help="with --versions-per-ref: each drawn version composes a second "
                            "type (another that composes, at a drawn level) with "
                            "probability P, e.g. 0.1 as Re-IQA (default 0: none)")


def _add_label_options(group) -> None:
    group.add_argument("--metrics", type=_metrics,
                       help="comma-separated metric keys (default: those the ensemble "
                            "weighs, the ten of the default one), or none for a label-free "
                            "run (no labeler actors, null scores and Q)")
    group.add_argument("--allow-missing-metrics", action="store_true",
                       help="label without LPIPS/DISTS when their weights are missing")
    group.add_argument("--ensemble", help="ensemble for Q: a file or a shipped name "
                                          "(default, pmos; default: default)")


def _add_storage_options(group) -> None:
    group.add_argument("--shard-refs", type=_positive,
                       help="references per shard (default: a resumed dataset's; else "
                            "sized for about 0.5-1 GB of images a shard: 16 at 512x384 "
                            "with 165 versions, more with fewer or smaller images)")
    group.add_argument("--store", choices=STORE_MODES, default=DEFAULT_STORE,
                       help="what the shards keep of each distorted version: images (its "
                            "PNG, the default), recipes (its recipe, labels and pixel "
                            "SHA-256 only: readers replay it) or hybrid "
                            "(recipes plus the PNGs of the learned-denoiser versions, whose "
                            "replay is not portable; recommended)")
    group.add_argument("--keep-pngs", type=_distortion_ids, metavar="TYPES",
                       help="with --store hybrid: also keep the PNGs of these types' "
                            "versions (ids, ranges or names), trading bytes for loader "
                            "speed: docs/bench-storage.md lists each type's replay cost")


def _add_resume_options(group) -> None:
    group.add_argument("--restart", action="store_true",
                       help="remove an earlier run's shards and run files from OUT, start over")
    _add_take_over(group, "OUT")
    group.add_argument("--verify", action="store_true",
                       help="on resume, check every finished tar's SHA-256 (reads them all)")
    group.add_argument("--retry-unreadable", action="store_true",
                       help="on resume, make again the finished shards that left out a "
                            "source whose read failed (a network or NFS hiccup, a file "
                            "restored since: failures.jsonl names them as unreadable), or "
                            "one that did not decode and has been repaired since")


def _add_cluster_options(group) -> None:
    group.add_argument("--address", help="submit to a Ray cluster: its dashboard's address, "
                       "http://127.0.0.1:8265 through `ray dashboard` or a port-forward")
    group.add_argument("--actors", type=int,
                       help="labeler actors (default: one per GPU, at most that; on a "
                            f"cluster without GPUs one per {CPUS_PER_CPU_ACTOR} CPUs, one at "
                            "least)")
    group.add_argument("--max-in-flight", type=int,
                       help="shard tasks in flight at once (default: the whole CPUs the "
                            "labeler actors leave, one at least; more risks a hang where a "
                            "labeler dies)")
    group.add_argument("--label-timeout", type=float, metavar="SECONDS",
                       help="how long a shard waits for a labeler actor's answer (a "
                            "reference's labels, the learned denoiser's network), its "
                            "queueing at the actor included, before it records that "
                            "reference or version as failed and goes on (default: as long "
                            "as it takes)")


def _inspect(args: argparse.Namespace) -> int:
    """Print a dataset's summary and validate it; exit 1 when a problem is found (2 when
    there is no dataset folder to look at)."""
    from pipeline.commands.inspect_dataset import inspect

    if not args.out.strip():
        raise ValueError("no dataset path given")
    location = Location.parse(args.out)
    kind = location.fs.get_file_info(location.root).type
    if kind != pafs.FileType.Directory:
        raise ValueError(f"{redact(args.out)} is a file, not a dataset folder"
                         if kind == pafs.FileType.File else f"{redact(args.out)} does not exist")
    lines, problems = inspect(args.out, args.deep, args.sample_seed, args.workers)
    if lines:
        print("\n".join(lines))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("valid" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def _add_take_over(parser: argparse.ArgumentParser, output: str) -> None:
    parser.add_argument("--take-over", action="store_true",
                        help=f"take over {output}'s lease from a writer that stopped "
                             "refreshing it")


def _convert(args: argparse.Namespace) -> int:
    """Rewrite a dataset in another storage mode (materialize: images)."""
    from pipeline.commands.convert import convert

    done = convert(args.source, args.target, args.store, _kept_pngs(args.keep_pngs),
                   args.workers, args.take_over, args.command)  # convert or materialize
    print(f"converted {redact(args.source)} into {redact(args.target)} ({args.store}): "
          f"{done['shards']} "
          f"shards ({done['skipped']} already complete), {done['replayed']} versions replayed "
          f"and verified, {done['dropped']} PNGs dropped after their replay was verified")
    return 0


def _validate_levels(args: argparse.Namespace) -> int:
    """Mean label Q by distortion and level of a generated dataset, checked against the
    spec's level order; writes a table (markdown, JSON) and a plot (PNG)."""
    from pipeline.commands.validate_levels import failing, not_checked, validate_levels

    location = Location.parse(args.out)  # a file:// URI is a local folder too
    target = args.target or (location.root if location.atomic_rename else ".")
    rows = validate_levels(args.out, Path(target))
    failed = failing(rows)
    print(f"wrote {Path(target) / 'validate-levels'}.md, .json and .png ({len(rows)} types)")
    unchecked = not_checked(rows)
    print(("all level orders hold" if not unchecked else
           f"all level orders checked hold (not checked: {', '.join(unchecked)})")
          if not failed else f"level order fails for: {', '.join(failed)}")
    return 1 if failed else 0


def _deep_count_given(argv: list[str]) -> list[str]:
    """`inspect --deep OUT` as `inspect --deep=8 OUT` (argparse would take OUT for the
    optional N and refuse it as not a number), --deep's abbreviations too, nothing after
    `--`."""
    if argv[:1] != ["inspect"]:
        return argv
    words = list(argv)
    for place, word in enumerate(words):
        if word == "--":
            break
        after = words[place + 1] if place + 1 < len(words) else ""
        if len(word) > 2 and "--deep".startswith(word) and not after.lstrip("-").isdigit():
            words[place] = f"--deep={DEEP_SAMPLES}"
    return words


_count, _positive = integer_at_least(0), integer_at_least(1)


def _cell_width(text: str) -> int:
    """A thumbnail width in pixels, 32 to 1024 (the sheet holds up to 43 x 6 of them)."""
    try:
        width = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of pixels: {text!r}") from None
    if not 32 <= width <= 1024:
        raise argparse.ArgumentTypeError(f"must be 32 to 1024 pixels, got {width}")
    return width


def _add_label_commands(commands) -> None:
    from pipeline.commands import label_commands as lc

    weights = commands.add_parser(
        "weights", help="get the LPIPS/DISTS ImageNet weights into the torch hub cache",
        description="LPIPS and DISTS need alexnet-owt-7be5be79.pth and vgg16-397923af.pth in "
                    "$TORCH_HOME/hub/checkpoints. `fetch` downloads them (where a network "
                    "exists); `import DIR` copies them from a folder, checking their hashes.")
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("fetch", help="download the missing files").set_defaults(
        run=lc.weights_fetch)
    importing = actions.add_parser("import", help="copy the files from a folder")
    importing.add_argument("directory", metavar="DIR")
    importing.set_defaults(run=lc.weights_import)

    fit = commands.add_parser(
        "fit-ensemble", help="fit ensemble weights and mappings to a MOS table",
        description=lc.fit_ensemble_command.__doc__ + " The table is KADID-10k's dmos.csv "
                    "(dist_img, ref_img, dmos, var).")
    fit.add_argument("table", metavar="MOS.csv")
    fit.add_argument("--ref-dir", help="folder of the reference images (default: images/ "
                                       "beside the table)")
    fit.add_argument("--dist-dir", help="folder of the distorted images (default: --ref-dir)")
    fit.add_argument("-o", "--output", default="fitted_ensemble.json",
                     help="ensemble file to write, a .report.json beside it (default "
                          "fitted_ensemble.json in the current folder)")
    fit.add_argument("--metrics", type=lambda text: text.split(","), default=None,
                     help="comma-separated metric keys (default: all ten)")
    fit.add_argument("--allow-missing-metrics", action="store_true",
                     help="fit without LPIPS/DISTS when their weights are missing")
    fit.add_argument("--seed", type=_count, default=0,
                     help="seed of the 80/20 reference split, 0 or more (default 0)")
    fit.add_argument("--name", default="fitted",
                     help="name recorded in the ensemble file (default fitted)")
    fit.set_defaults(run=lc.fit_ensemble_command)

    relabel = commands.add_parser(
        "relabel", help="derive Q from stored raw scores with another ensemble file",
        description=lc.relabel_command.__doc__)
    relabel.add_argument("out", metavar="OUT", help="a dataset generate wrote: a folder or a URI "
                         "(file://, s3://, gs://)")
    relabel.add_argument("--ensemble", required=True,
                         help="the ensemble to apply: a file or a shipped name (default, pmos)")
    _add_take_over(relabel, "OUT")
    relabel.set_defaults(run=lc.relabel_command)


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=_size, default=TargetSize(),
                        help="target WxH: cover by area scaling, then centre-crop "
                             "(default 512x384); or native: each source's own size")
    parser.add_argument("--allow-upscale", action="store_true",
                        help="upscale sources smaller than the target instead of refusing them")
    parser.add_argument("--seed", type=_count, default=0, help="run seed, 0 or more (default 0)")


def _in_words(error: BaseException) -> str:
    """An error as the user reads it: a file where a folder was wanted (making the folder, or
    a path through it) named, not errno's File exists or Not a directory alone."""
    if isinstance(error, FileExistsError | NotADirectoryError) and error.filename:
        named = Path(error.filename)
        blocking = file_in_the_way(named)
        if blocking is not None:
            return (f"{blocking} is a file where a folder is wanted ({error.strerror}: "
                    f"{named}): choose another path, or move the file")
    return str(error)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # listed in the help; the entry point above hands it on
        print("iqa-factory: `train` runs from the iqa-factory command (or python -m "
              "iqa_factory, python -m training); `python -m pipeline.cli` has the pipeline's "
              "commands only", file=sys.stderr)
        return 2
    args = build_parser().parse_args(_deep_count_given(argv))
    try:
        with stops_as_interrupts():  # a SIGTERM, as a Ctrl-C: leases let go, staged files gone
            return args.run(args)
    except BrokenPipeError:  # the reader went away (`iqa-factory list | head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (distortions.DistortionError, ValueError, OSError, tarfile.TarError,
            PipelineError, LeaseError) as error:  # (a shard's TarError: ShardReadError names it)
        print(f"iqa-factory: error: {_in_words(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = ("the same command without --restart" if getattr(args, "restart", False)
                 else "the same command")  # with it, a rerun would clear what this one made
        resume = f" ({again} resumes a {args.command} run)" if args.command in RESUMABLE else ""
        how, code = ("terminated (SIGTERM)", 143) if terminated() else ("interrupted", 130)
        print(f"\niqa-factory: {how}{resume}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
