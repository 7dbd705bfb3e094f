"""A contact sheet: every distortion of one image in a labelled 33 x 5 grid (plus the reference)."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

import distortions

DEFAULT_CELL_WIDTH = 160
LABEL_WIDTH = 170
HEADER = 28
CAPTION = 16
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _caption_font(draw: ImageDraw.ImageDraw, text: str, width: int) -> ImageFont.ImageFont:
    """The largest caption font, 11 px down to 7 px, whose text fits the cell width."""
    for size in range(11, 7, -1):
        font = _font(size)
        if draw.textlength(text, font=font) <= width - 4:
            return font
    return _font(7)


def render_contact_sheet(img: np.ndarray, seed: int = 0, ref_id: str = "sheet",
                         cell_width: int = DEFAULT_CELL_WIDTH,
                         show_progress: bool = True) -> Image.Image:
    """Render all 165 versions of `img` (distorted with the run's seed scheme) in a grid."""
    distortions.check_image(img)
    cell_height = round(cell_width * img.shape[0] / img.shape[1])
    row_height = cell_height + CAPTION
    bank = distortions.all()
    sheet = Image.new("RGB", (LABEL_WIDTH + 6 * cell_width, HEADER + len(bank) * row_height),
                      BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(14)
    for column, title in enumerate(["reference", *(f"level {lv}" for lv in distortions.LEVELS)]):
        draw.text((LABEL_WIDTH + column * cell_width + 4, 6), title, fill=INK, font=font)
    thumbnail = Image.fromarray(img).resize((cell_width, cell_height), Image.Resampling.LANCZOS)
    cells = [(d, lv) for d in bank for lv in distortions.LEVELS]
    for d, level in tqdm(cells, desc="contact sheet", unit="img", disable=not show_progress):
        top = HEADER + (d.id - 1) * row_height
        if level == 1:
            draw.text((4, top + cell_height // 2 - 8), f"{d.id:2d} {d.name}", fill=INK, font=font)
            sheet.paste(thumbnail, (LABEL_WIDTH, top))
        seed_for_cell = distortions.derive_seed(seed, ref_id, d.id, level)
        out, _ = distortions.apply(img, d.id, level, seed_for_cell)
        left = LABEL_WIDTH + level * cell_width
        cell = Image.fromarray(out).resize((cell_width, cell_height), Image.Resampling.LANCZOS)
        sheet.paste(cell, (left, top))
        caption = d.describe(level)
        draw.text((left + 3, top + cell_height + 1), caption, fill=INK,
                  font=_caption_font(draw, caption, cell_width))
    return sheet
