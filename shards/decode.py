"""Decoding an image file into 8-bit RGB, with every conversion recorded and every failure
typed: the one decoder of every image that enters the system from outside, a run's sources
(pipeline) as a fine-tuning dataset's images (training), so both see the same pixels.

Grayscale, gray+alpha, RGBA, palette, CMYK, 16-bit and EXIF-rotated images are converted
(orientation applied; alpha, and a PNG's transparent colour in any mode, composited on white),
and of an animation or a multi-page file the first frame is kept (each recorded; an ICC
profile is not applied, one other than sRGB's recorded as such); zero-byte,
truncated, corrupt and non-image files (a JPEG cut short even where it was given an end marker:
libjpeg's warnings are read), files of formats that are not images here (PostScript), and
decompression bombs (more pixels than the limit) raise DecodeError with a
reason."""

import io
import os
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageCms, PngImagePlugin, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
SAMPLE_FORMAT = 339  # the TIFF tag saying whether samples are unsigned, signed or floats
# the file names of the formats Pillow reads (its AVIF plugin included): what a folder of
# images is taken to hold (anything else in it is skipped)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp",
                    ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k", ".jpf", ".jpx",
                    ".avif", ".tga", ".qoi"}


class DecodeError(ValueError):
    """A source could not be decoded; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray          # uint8 H x W x 3
    original_size: tuple[int, int]  # width, height as stored (before orientation)
    conversions: tuple[str, ...]


# libjpeg's warnings that it went on past data it could not read and made up the pixels from
# there (a JPEG cut short and given an end marker, or damaged inside its scan); its others
# (unknown JFIF revision, ...) leave the pixels the file's
MADE_UP_PIXELS = ("premature end of data segment", "premature end of jpeg file",
                  "bad huffman code", "bad arithmetic code", "instead of rst",
                  "inconsistent progression sequence")
SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I")
ALPHA_MODES = ("RGBA", "LA", "PA")
# EXIF orientation -> the transposition that shows the image upright (as ImageOps does)
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
TURNING = {5, 6, 7, 8}  # the orientations whose UPRIGHT transpose exchanges width and height


def to_eight_bits(values: np.ndarray, bits: int = 16) -> np.ndarray:
    """`bits`-bit values (0 .. 2^bits - 1) to 8 bits, nearest (v * 255 / (2^bits - 1) rounded,
    never a tie: the top is odd): 16 bits: 65535 -> 255, 257 k -> k; in integers (4 bytes a
    value, not float64's 8 and their copies: 2 * 255 * 65535 + 65535 < 2^32)."""
    top = 2 ** bits - 1
    return ((2 * 255 * values.astype(np.uint32) + top) // (2 * top)).astype(np.uint8)


def _rawmode(image: Image.Image) -> str | None:
    """How the file stores its pixels (e.g. RGB;16B, L;4), where Pillow says. Read before
    load."""
    if not image.tile:
        return None
    args = image.tile[0].args  # PNG: the raw mode; TIFF: (raw mode, ...)
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return rawmode if isinstance(rawmode, str) else None


def _deep_colour(image: Image.Image, data: bytes) -> tuple[str, int] | None:
    """(how the file stores its pixels, bits per value) of a colour image of more than 8 bits
    per channel, which Pillow opens as 8-bit (a PNG's or TIFF's keeping each value's high
    byte, a JPEG 2000's rounding its whitest values over to black); None for any other image.
    Read before load."""
    if image.mode not in ("RGB", "RGBA"):
        return None
    rawmode = _rawmode(image)
    if rawmode and ";16" in rawmode:
        return rawmode, 16
    if image.format != "JPEG2000" or not (components := jpeg2000_components(data)):
        return None
    depths, bits = {depth for depth, _ in components}, max(depth for depth, _ in components)
    if bits <= 8:
        return None
    signed = any(signed for _, signed in components)
    if bits > 16 or len(depths) > 1 or signed:
        shown = "/".join(map(str, sorted(depths))) + (", signed" if signed else "")
        raise DecodeError("unsupported_mode", f"JPEG 2000 of {shown} bits per value: only "
                          "unsigned components of one depth, 16 bits at most, are read")
    return f"{image.mode};{bits}", bits


def jpeg2000_components(data: bytes) -> list[tuple[int, bool]]:
    """(bits, signed) of each component of a JPEG 2000 image, from its codestream's size
    segment (SIZ: a JP2 file's codestream box, or a bare codestream); none where the bytes
    hold none."""
    start = 0 if data[:4] == JPEG2000_CODESTREAM else _codestream_box(data)
    if start is None or data[start:start + 4] != JPEG2000_CODESTREAM:
        return []
    components_at = start + 42  # SOC, SIZ marker and length, Rsiz, 8 sizes, Csiz
    if len(data) < components_at:
        return []
    count = struct.unpack_from(">H", data, components_at - 2)[0]
    ssiz = data[components_at:components_at + 3 * count:3]  # Ssiz, XRsiz, YRsiz each
    return [((value & 0x7F) + 1, bool(value & 0x80)) for value in ssiz]


JPEG2000_CODESTREAM = b"\xff\x4f\xff\x51"  # SOC then SIZ


def _codestream_box(data: bytes) -> int | None:
    """Where a JP2 file's contiguous codestream box (jp2c) begins its data, walking the
    top-level boxes by their lengths; None where there is none."""
    at = 0
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1 and at + 16 <= len(data):  # an extended length
            length, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif length == 0:  # the last box: to the end
            length = len(data) - at
        if kind == b"jp2c":
            return at + header
        if length < header:
            return None
        at += length
    return None


# raw mode -> bits: Pillow scales such pixels but leaves their PNG transparent value raw (a
# 1-bit one it gives as 0 or 255 already)
LOW_BIT_GRAY = {"L;2": 2, "L;4": 4}


def _transparent_colour(image: Image.Image) -> int | tuple | None:
    """A PNG's transparent colour (tRNS) on the scale of the pixels Pillow gives (a 2- or
    4-bit gray key scaled as its pixels are: Pillow leaves it raw); None for none. Read
    before load."""
    key = image.info.get("transparency")
    if image.mode == "RGB" and isinstance(key, tuple):
        return key
    if image.mode not in ("1", "L", *SIXTEEN_BIT_GRAY) or not isinstance(key, int):
        return None
    bits = LOW_BIT_GRAY.get(_rawmode(image) or "")
    return key * (255 // (2 ** bits - 1)) if bits else key


def _decoded_deep(data: bytes, stored: tuple[str, int], conversions: list[str]
                  ) -> Image.Image:
    """A colour image of more than 8 bits per value (`stored`: _deep_colour's), decoded by
    OpenCV (16-bit values as the file holds them), to 8 bits by `to_eight_bits`."""
    rawmode, bits = stored
    values = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if values is None or values.dtype != np.uint16 or values.ndim != 3:
        raise DecodeError("corrupt", f"{rawmode} pixels that OpenCV cannot decode as 16-bit")
    conversions.append(f"{rawmode}->8-bit")
    code = cv2.COLOR_BGRA2RGBA if values.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return Image.fromarray(to_eight_bits(cv2.cvtColor(values, code), bits))


def _to_rgb(image: Image.Image, conversions: list[str], key: int | tuple | None
            ) -> Image.Image:
    """8-bit RGB from any mode, appending what was done to `conversions`; `key`: its
    transparent colour (_transparent_colour), composited as alpha is. Floating-point images
    and signed ones (no agreed range) and integer ones outside 0..65535 are refused, never
    guessed."""
    if image.mode == "F":
        raise DecodeError("unsupported_mode", "floating-point pixels (mode F): no agreed range "
                                              "to map to 8 bits")
    if 2 in _sample_formats(image):
        raise DecodeError("unsupported_mode", "signed integer pixels (TIFF SampleFormat 2): no "
                                              "agreed map to 8 bits")
    if image.mode == "I":
        low, high = image.getextrema()
        if low < 0 or high > 65535:
            raise DecodeError("unsupported_mode", f"integer pixels {low}..{high}, outside the "
                                                  "16-bit range 0..65535 (mode I)")
    mode, gray = image.mode, None
    if image.mode in SIXTEEN_BIT_GRAY:
        conversions.append(f"{image.mode}->8-bit")
        gray = np.asarray(image)  # the transparent value is matched before it is rounded
        image = Image.fromarray(to_eight_bits(gray))
    if isinstance(key, tuple):  # a transparent colour (PNG tRNS): as a palette's, as alpha
        conversions.append(f"{mode} with a transparent colour->RGBA")
        image = image.convert("RGBA")
    elif key is not None:
        conversions.append(f"{mode} with a transparent value->LA")
        gray = np.asarray(image.convert("L")) if gray is None else gray
        image = image.convert("L")
        image.putalpha(Image.fromarray(np.where(gray == key, 0, 255).astype(np.uint8)))
    if image.mode == "P":
        conversions.append("palette->RGBA")
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            conversions.append(f"{image.mode}: alpha composited on white")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        else:
            conversions.append(f"{image.mode}: opaque alpha dropped")
            image = rgba
    if image.mode != "RGB":
        conversions.append(f"{image.mode}->RGB")
        image = image.convert("RGB")
    return image


def _sample_formats(image: Image.Image) -> tuple[int, ...]:
    """A TIFF's SampleFormat values (1 unsigned, 2 signed, 3 floating point); () elsewhere."""
    value = getattr(image, "tag_v2", {}).get(SAMPLE_FORMAT, ())
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def image_formats() -> list[str]:
    """Pillow's names of the formats a source may be (those of IMAGE_EXTENSIONS; JPEG's opens
    cameras' multi-picture JPEGs too): the only plugins a source is opened with. Pillow's
    others are not images here (its EPS plugin would hand the bytes to Ghostscript)."""
    Image.init()
    extensions = Image.registered_extensions()
    return sorted({extensions[ext] for ext in IMAGE_EXTENSIONS if ext in extensions})


def _signature(data: bytes) -> str | None:
    """The format among those a source may be (image_formats) whose signature `data` opens
    with, by Pillow's own checks (None: none), for a file Pillow could not open: a damaged
    image, not something else."""
    for name in image_formats():
        _, accept = Image.OPEN.get(name, (None, None))
        try:
            if accept is not None and accept(data[:16]):
                return name
        except (IndexError, TypeError, ValueError, struct.error):  # a prefix too short
            continue
    return None


def _unapplied_profile(image: Image.Image) -> list[str]:
    """The record of an embedded ICC profile other than sRGB's: decode does not apply one (its
    values are read as sRGB, as IQA datasets read them), so a wide-gamut photo (Adobe RGB,
    Display P3) is said to be read so. Read before load."""
    icc = image.info.get("icc_profile")
    if not icc:
        return []
    try:
        name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return ["an ICC profile that cannot be read, not applied (values read as sRGB)"]
    name = " ".join(name.split())[:80]
    if "srgb" in name.lower():
        return []
    return [f"ICC profile {name or 'without a name'!r} not applied (values read as sRGB)"]


def _libjpeg_warning(data: bytes) -> list[str]:
    """What libjpeg warns of first as it decodes the JPEG `data` (Pillow's decoder keeps its
    warnings to itself; simplejpeg's strict decode raises the first): a DecodeError where it
    made up pixels (MADE_UP_PIXELS), else the record of a warning of corrupt data (bytes left
    over before a marker: padding, or a scan decoded wrong), else nothing. A file is checked
    up to its first warning only."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True,  # the fastest: gray, at
                               min_height=1, min_width=1, min_factor=8)  # 1/8 (all its data read)
    except ValueError as error:
        message = " ".join(str(error).split())
        if any(words in message.lower() for words in MADE_UP_PIXELS):
            raise DecodeError("corrupt", f"libjpeg: {message} (the pixels from there are made "
                                         "up)") from None
        if "corrupt jpeg data" in message.lower():
            return [f"libjpeg warned: {message} (the pixels may be damaged)"]
    return []


def _frames(image: Image.Image) -> list[str]:
    """The conversion an animation or a multi-page file goes through: its first frame."""
    if not getattr(image, "is_animated", False):
        return []
    return [f"first of {image.n_frames} frames" if image.format != "GIF"
            else "first frame of an animation"]  # a GIF's frame count means reading them all


# decode changes two of Pillow's module settings while it runs: one decode at a time holds
# them, or threads would restore each other's values and leave Pillow's checks off for good
_PILLOW_SETTINGS = threading.Lock()


@contextmanager
def _pillow_settings() -> Iterator[None]:
    """Pillow's pixel limit off (decode checks the header's size against its own limit) and
    a PNG metadata chunk allowed Pillow's 64 MiB for them all, not only its 1 MiB per chunk
    (an intact image with a large ICC profile is no damaged file); both restored after."""
    with _PILLOW_SETTINGS:
        previous = Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK
        Image.MAX_IMAGE_PIXELS = None
        PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK = previous


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode encoded image bytes into uint8 RGB, or raise DecodeError."""
    if not data:
        raise DecodeError("empty", "zero-byte file")
    with _pillow_settings():
        return _decoded(data, max_pixels)


def _decoded(data: bytes, max_pixels: int) -> Decoded:
    """decode's work, under _pillow_settings."""
    with _typed_failures(data[:16]), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=image_formats()) as image:
            _check_pixels(image.size, max_pixels)
            Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check of later frames
            deep = _deep_colour(image, data)
            key = None if deep else _transparent_colour(image)  # 16-bit: OpenCV's alpha
            conversions: list[str] = _unapplied_profile(image) + _frames(image)
            stated = image.getexif().get(0x0112, 1)  # read before load: see below
            original_size = _sizes(image, stated)[0]
            image.load()
            if image.format in ("JPEG", "MPO"):
                conversions += _libjpeg_warning(data)
            orientation = image.getexif().get(0x0112, 1)
            if deep:
                image = _decoded_deep(data, deep, conversions)
            if orientation in UPRIGHT:
                conversions.append(f"EXIF orientation {orientation} applied")
                image = image.transpose(UPRIGHT[orientation])
            elif stated in UPRIGHT:  # a TIFF: Pillow turns it upright as it loads it
                conversions.append(f"EXIF orientation {stated} applied")
            rgb = _to_rgb(image, conversions, key)
            return Decoded(np.asarray(rgb).copy(), original_size, tuple(conversions))


def header_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
                ) -> tuple[int, int]:
    """An image file's (width, height) as `decode` returns it (EXIF orientation applied), read
    from its header alone; or the DecodeError decode would raise on that header: a file of
    none of image_formats() (Pillow's PCX or ICO say), a damaged header, more pixels than
    max_pixels. A body cut short shows only at decode."""
    with open(path, "rb") as file:
        head = file.read(16)
    if not head:
        raise DecodeError("empty", "zero-byte file")
    with (_pillow_settings(), _typed_failures(head),
          Image.open(path, formats=image_formats()) as image):
        _check_pixels(image.size, max_pixels)
        return _sizes(image, _header_orientation(image, path))[1]


def _header_orientation(image: Image.Image, path: str | os.PathLike) -> int:
    """An opened file's EXIF orientation (1: none) as decode applies it, without decoding the
    image where its header holds all its metadata: Pillow's PNG plugin decodes a PNG to look
    for metadata after its image data, which only the rare PNG has."""
    if image.format == "PNG" and "exif" not in image.info and not _png_metadata_late(path):
        return Image.Image.getexif(image).get(0x0112, 1)  # the info of the chunks read
    return image.getexif().get(0x0112, 1)


def _png_metadata_late(path: str | os.PathLike) -> bool:
    """Whether a PNG has a chunk other than image data after its first image data chunk (IDAT):
    metadata only a decode reads. Read from the chunks' headers, their data skipped; a file
    cut short ends the walk."""
    with open(path, "rb") as file:
        file.seek(8)  # the signature
        seen_data = False
        while len(header := file.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND":
                return False
            if seen_data and kind != b"IDAT":
                return True
            seen_data = seen_data or kind == b"IDAT"
            file.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return False


def _sizes(image: Image.Image, orientation: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """An opened image's (width, height) as its file stores it, and once its EXIF orientation
    is applied (orientations 5-8 exchange the two), from Pillow's size before load: a TIFF
    whose Orientation tag turns it gives it upright already (and turns the pixels as it
    loads them), other images (a TIFF whose orientation is only in its XMP too) as stored."""
    width, height = size = image.size
    if orientation not in TURNING:
        return size, size
    if image.format == "TIFF" and image.tag_v2.get(0x0112) in TURNING:
        return (height, width), size
    return size, (height, width)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """A DecodeError where a header's size is more pixels than the limit."""
    width, height = size
    if width * height > max_pixels:
        raise DecodeError("too_many_pixels", f"{width}x{height} exceeds {max_pixels} pixels")


@contextmanager
def _typed_failures(head: bytes) -> Iterator[None]:
    """Pillow's failures to open or decode a file that begins with `head` (its first bytes),
    as DecodeErrors with their reasons."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DecodeError("too_many_pixels", str(error)) from None
    except UnidentifiedImageError:
        format_name = _signature(head)
        if format_name:
            raise DecodeError("corrupt", f"a {format_name} signature, but its header cannot be "
                                         "read") from None
        raise DecodeError("not_an_image", "no image format recognised") from None
    except DecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, KeyError, IndexError,
            struct.error, RuntimeError) as error:  # what Pillow's plugins raise on damage
        # (a later TIFF page without its size, a GIF frame cut short, an AVIF libavif refuses)
        if "MAX_TEXT" in str(error):  # Pillow's bound on metadata, decompressed
            raise DecodeError("too_large", f"PNG metadata beyond Pillow's "
                                           f"{PngImagePlugin.MAX_TEXT_MEMORY >> 20} MiB for "
                                           f"it: {error}") from None
        raise DecodeError("corrupt", f"{type(error).__name__}: {error}") from None
