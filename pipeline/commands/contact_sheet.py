"""A contact sheet: every registered distortion of one image in a labelled grid, a row per type
x 5 levels (plus the reference), made from an image with the bank, or read back from a shard with
its labels (a row per type the shard holds)."""

import io
import json
import posixpath
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from tqdm import tqdm

import distortions
from shards.keys import is_reference, ref_id_of
from shards.png import decode_png
from shards.replay import Pending, ReplayContext, changed_reference
from shards.storage import Location, file_in_the_way
from shards.tar_stream import read_tar
from shards.words import a_few

DEFAULT_CELL_WIDTH = 160
LABEL_WIDTH = 170
HEADER = 28
CAPTION = 16
ROW_LABEL = 18  # a row is at least this tall, so its label fits beside a thin thumbnail
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
FAILED_FILL = (225, 225, 225)
QUALITY_MARK = " Q="  # a stored version's caption: its parameters, then its label
JPEG_MAX_SIDE = 65500  # libjpeg's largest side (JPEG_MAX_DIMENSION)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fitted(draw: ImageDraw.ImageDraw, text: str, width: int, largest: int
            ) -> tuple[ImageFont.ImageFont, str]:
    """(The largest font, `largest` px down to 7 px, in which `text` fits `width` less a
    4 px margin; the text itself, or at 7 px cut short with an ellipsis where it still does
    not fit: a narrow cell's text never runs into its neighbour's). A stored version's label
    (from QUALITY_MARK on) is kept whole: the parameters before it are cut."""
    for size in range(largest, 6, -1):
        font = _font(size)
        if draw.textlength(text, font=font) <= width - 4:
            return font, text
    head, mark, label = text.rpartition(QUALITY_MARK) if QUALITY_MARK in text else (text, "", "")
    tail = "\u2026" + mark + label
    while head and draw.textlength(head + tail, font=font) > width - 4:
        head = head[:-1]
    return font, head + tail


def _cell_height(reference_shape: tuple[int, ...], cell_width: int) -> int:
    """A thumbnail's height: the reference's aspect at `cell_width`, at least 1 pixel."""
    return max(1, round(cell_width * reference_shape[0] / reference_shape[1]))


def _row_height(reference_shape: tuple[int, ...], cell_width: int) -> int:
    return max(_cell_height(reference_shape, cell_width), ROW_LABEL) + CAPTION


def sheet_size(reference_shape: tuple[int, ...], rows: int, cell_width: int
               ) -> tuple[int, int]:
    """(width, height) in pixels of the sheet of `rows` types of a reference of that shape."""
    return (LABEL_WIDTH + 6 * cell_width,
            HEADER + rows * _row_height(reference_shape, cell_width))


SizeCheck = Callable[[tuple[int, int]], None]  # raises where a sheet of that size can't be kept


def render_grid(reference: np.ndarray,
                cells: dict[tuple[int, int], tuple[np.ndarray | None, str]],
                cell_width: int = DEFAULT_CELL_WIDTH) -> Image.Image:
    """Lay out the reference and (distortion id, level) -> (image, caption) cells in a grid of
    a row per type that has a cell (in the bank's order) x 5 levels; absent levels stay
    blank, a cell without an image (a version that failed) is gray and says so."""
    cell_height = _cell_height(reference.shape, cell_width)
    row_height = _row_height(reference.shape, cell_width)
    bank = _rows(cells)
    sheet = Image.new("RGB", sheet_size(reference.shape, len(bank), cell_width), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(14)
    for column, title in enumerate(["reference", *(f"level {lv}" for lv in distortions.LEVELS)]):
        title_font, title = _fitted(draw, title, cell_width, 14)
        draw.text((LABEL_WIDTH + column * cell_width + 4, 6), title, fill=INK, font=title_font)

    def thumbnail(image: np.ndarray) -> Image.Image:
        return Image.fromarray(image).resize((cell_width, cell_height), Image.Resampling.LANCZOS)

    reference_cell = thumbnail(reference)
    for row, d in enumerate(bank):
        top = HEADER + row * row_height
        middle = top + (row_height - CAPTION) // 2 - 8
        draw.text((4, middle), f"{d.id:2d} {d.name}", fill=INK, font=font)
        sheet.paste(reference_cell, (LABEL_WIDTH, top))
        for level in distortions.LEVELS:
            if (d.id, level) not in cells:
                continue
            image, caption = cells[(d.id, level)]
            left = LABEL_WIDTH + level * cell_width
            if image is None:
                draw.rectangle((left, top, left + cell_width - 1, top + cell_height - 1),
                               fill=FAILED_FILL)
                failed_font, failed = _fitted(draw, "failed", cell_width, 14)
                draw.text((left + 4, middle), failed, fill=INK, font=failed_font)
            else:
                sheet.paste(thumbnail(image), (left, top))
            caption_font, caption = _fitted(draw, caption, cell_width, 11)
            draw.text((left + 3, top + row_height - CAPTION + 1), caption, fill=INK,
                      font=caption_font)
    return sheet


def _rows(cells: dict[tuple[int, int], object]) -> list[distortions.Distortion]:
    """The types that have a cell, in the bank's order: the sheet's rows."""
    present = {distortion_id for distortion_id, _ in cells}
    return [d for d in distortions.registered() if d.id in present]


def render_contact_sheet(img: np.ndarray, seed: int = 0, ref_id: str = "sheet",
                         cell_width: int = DEFAULT_CELL_WIDTH, check_size: SizeCheck | None = None
                         ) -> tuple[Image.Image, dict[tuple[int, int], str]]:
    """(Every registered type at every level of `img`, distorted with the run's seed scheme,
    in a grid; (distortion id, level) -> why, of each version the bank refused to make, as
    generate records it in failures.jsonl: its cell says failed, the others are drawn).
    `check_size` is given the sheet's (width, height) before any version is made."""
    distortions.check_image(img)
    if check_size is not None:
        check_size(sheet_size(img.shape, len(distortions.registered()), cell_width))
    scenarios = [(d, lv) for d in distortions.registered() for lv in distortions.LEVELS]
    cells, failures = {}, {}
    for d, level in tqdm(scenarios, desc="contact sheet", unit="img"):
        try:
            out, _ = distortions.apply(img, d.id, level,
                                       distortions.derive_seed(seed, ref_id, d.id, level))
        except distortions.DenoiserUnavailableError:
            raise  # the set-up's, not the image's: no sheet of 25 cells saying so
        except distortions.DistortionError as error:
            out, failures[(d.id, level)] = None, str(error)
        cells[(d.id, level)] = (out, d.describe(level))
    return render_grid(img, cells, cell_width), failures


def render_shard_sheet(tar_path: str, ref_id: str | None = None,
                       cell_width: int = DEFAULT_CELL_WIDTH, check_size: SizeCheck | None = None
                       ) -> tuple[Image.Image, int]:
    """(The grid of one reference of a shard (its first by default) as the shard stores it,
    each cell captioned with its parameters and its quality label Q, the count of its
    composed versions, left out: a chain has no cell in the type x level grid). A version
    stored as its recipe is replayed, checked against its recorded SHA-256. Only that
    reference's members are held, not the shard. `check_size` is given the sheet's
    (width, height) before any version is decoded or replayed."""
    location = Location.parse(tar_path)
    if not location.exists(location.root):  # (pyarrow's own words otherwise)
        raise FileNotFoundError(f"{tar_path}: no such shard tar")
    chosen = ref_id or first_reference(tar_path)
    mine = list(shard_samples(tar_path, chosen).values())
    reference = _checked_reference(tar_path, chosen, mine)
    single, composed = _grid_versions(tar_path, chosen, mine)
    if check_size is not None:
        check_size(sheet_size(reference.shape, len(_rows(single)), cell_width))
    return render_grid(reference, _stored_cells(tar_path, reference, single), cell_width), composed


def _checked_reference(tar_path: str, chosen: str, mine: list[tuple[dict, bytes | None]]
                       ) -> np.ndarray:
    """The decoded pixels of reference `chosen` among its shard samples `mine`, checked
    against its record."""
    reference, record = next(((decode_png(png), record) for record, png in mine
                              if record["kind"] == "reference"), (None, None))
    if reference is None:
        raise ValueError(f"{tar_path} has no reference {chosen!r} (it holds "
                         f"{a_few(list(_reference_ids(tar_path))) or 'none'})")
    if problem := changed_reference(record["key"], reference, record):
        raise ValueError(f"{tar_path}: {problem}")
    return reference


def _grid_versions(tar_path: str, chosen: str, mine: list[tuple[dict, bytes | None]]
                   ) -> tuple[dict[tuple[int, int], tuple[dict, bytes | None]], int]:
    """((distortion id, level) -> (record, PNG or None) of the single-type versions among
    `mine`, the count of its composed ones); an error when there is no cell to draw."""
    versions = [(record, png) for record, png in mine if record["kind"] != "reference"]
    composed = sum(len(r.get("chain") or ()) > 1 for r, _ in versions)
    single = {(r["distortion_id"], r["level"]): (r, png) for r, png in versions
              if len(r.get("chain") or ()) <= 1}
    if composed and not single:
        raise ValueError(f"{tar_path} holds only composed versions of {chosen!r} ({composed}): "
                         "a chain of types has no cell in the type x level grid, no sheet to "
                         "draw")
    if not single:
        raise ValueError(f"{tar_path} holds no version of {chosen!r} (its failures.jsonl says "
                         "why): no sheet to draw")
    return single, composed


def _stored_cells(tar_path: str, reference: np.ndarray,
                  single: dict[tuple[int, int], tuple[dict, bytes | None]]
                  ) -> dict[tuple[int, int], tuple[np.ndarray, str]]:
    """(distortion id, level) -> (pixels, caption with Q) of each stored version, a recipe
    replayed with the libraries the dataset's manifest (OUT/shards/NAME's OUT) names."""
    context = ReplayContext.of(Location.parse(
        posixpath.dirname(posixpath.dirname(tar_path)) or "."))
    cells = {}
    for (distortion_id, level), (record, png) in single.items():
        d = distortions.get(distortion_id)
        label = ("" if record["quality"] is None  # (label-free)
                 else f"{QUALITY_MARK}{record['quality']:.2f}")
        pixels = (decode_png(png) if png is not None else
                  Pending(record["key"], reference, record, context).pixels())
        cells[(d.id, level)] = (pixels, d.describe(level) + label)
    return cells


def _reference_ids(tar_path: str) -> Iterator[str]:
    """The ref_ids of a shard's references, in its order, its records read as they are
    needed."""
    location = Location.parse(tar_path)
    for sample in read_tar(location, location.root, select=lambda name: name.endswith(".json")):
        if is_reference(sample["__key__"]):
            yield ref_id_of(sample["__key__"])


def first_reference(tar_path: str) -> str:
    """The ref_id of a shard's first reference, its records read up to it (the spec puts a
    shard's references first; a shard written otherwise is read further)."""
    first = next(_reference_ids(tar_path), None)
    if first is None:
        raise ValueError(f"{tar_path} holds no reference sample")
    return first


def shard_samples(tar_path: str, ref_id: str | None = None
                  ) -> dict[str, tuple[dict, bytes | None]]:
    """key -> (sample record, PNG bytes or None for a version stored as its recipe) of a shard
    tar (a path or an object-store URI, .tar or .tar.gz), read through the shared tar reader;
    with `ref_id`, only that reference's samples are read."""
    location = Location.parse(tar_path)
    select = None if ref_id is None else (
        lambda name: ref_id_of(name.partition(".")[0]) == ref_id)
    return {sample["__key__"]: (json.loads(sample["json"]), sample.get("png"))
            for sample in read_tar(location, location.root, select) if "json" in sample}


def check_picture_path(path: Path) -> None:
    """A file name Pillow can write an RGB picture to: not a folder, and ending in the
    extension of a format it writes RGB in (a 1-pixel picture is written to memory: formats
    Pillow only reads, or writes only in other modes, are refused before the rendering)."""
    if path.is_dir():
        raise ValueError(f"-o {path} is a folder: name the picture's file (say "
                         f"{path / 'sheet.png'})")
    blocking = file_in_the_way(path.parent)
    if blocking is not None:
        raise ValueError(f"-o {path}: {blocking} is a file where a folder is wanted")
    picture_format = Image.registered_extensions().get(path.suffix.lower())
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=picture_format)
    except (KeyError, OSError, ValueError, TypeError):
        raise ValueError(f"-o {path}: end the name in the extension of an image format Pillow "
                         "writes (.png, .jpg, .webp, .tif, ...)") from None
    _check_writable(path)


def _check_writable(path: Path) -> None:
    """A file can be made in the folder of `path`, or in the nearest folder above it that
    exists (where the folders it lacks are made): a file made there and removed at once."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"-o {path}: {folder} cannot be written to "
                         f"({error.strerror or error})") from None


def _too_large(path: Path, size: tuple[int, int], picture_format: str, why: str) -> NoReturn:
    """The ValueError of a sheet larger than `picture_format` holds."""
    raise ValueError(f"-o {path}: the sheet is {size[0]}x{size[1]} pixels, more than "
                     f"{picture_format} holds ({why}); write a .png, or choose a smaller "
                     "--cell-width") from None


def check_picture_size(path: Path, size: tuple[int, int]) -> None:
    """A picture of `size` (width, height) can be written to `path`'s format at that size:
    a row and a column of it are written to memory and read back (WebP holds 16383 pixels a
    side, JPEG 65500; an icon is written smaller), before the rendering."""
    picture_format = Image.registered_extensions()[path.suffix.lower()]
    width, height = size
    if picture_format == "JPEG" and max(size) > JPEG_MAX_SIDE:  # (libjpeg would say so on
        _too_large(path, size, picture_format,                  # stderr too)
                   f"its sides are {JPEG_MAX_SIDE} pixels at most")
    for thin in ((width, 1), (1, height)):
        written = io.BytesIO()
        try:
            Image.new("RGB", thin).save(written, format=picture_format)
            written.seek(0)
            kept = Image.open(written).size
        except UnidentifiedImageError:  # a format Pillow writes but does not read (PDF)
            continue
        except (OSError, ValueError, TypeError, OverflowError, RuntimeError, struct.error) as e:
            _too_large(path, size, picture_format, str(e))
        if kept != thin:
            raise ValueError(f"-o {path}: {picture_format} does not keep a {width}x{height} "
                             "picture at its size; write a .png")
