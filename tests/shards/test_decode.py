"""The decoder's records of what it did, and its refusals, say what happened in the file's own
terms: its size against the limit given, the frames it leaves out."""

import io
import itertools
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from shards.decode import DecodeError, decode, header_size


def _encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, data), by the PNG specification's layout."""
    chunks, at = [], 8
    while at < len(png):
        length, kind = struct.unpack_from(">I4s", png, at)
        chunks.append((kind, png[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks)


@pytest.mark.parametrize("side", [1100, 1500])  # above twice the limit, and between
def test_a_bomb_is_refused_naming_its_size_and_the_limit_given(side):
    with pytest.raises(DecodeError) as refused:
        decode(_encoded(Image.new("L", (side, side))), max_pixels=1_000_000)
    assert refused.value.reason == "too_many_pixels"
    assert str(refused.value) == f"too_many_pixels: {side}x{side} exceeds 1000000 pixels"
    assert Image.MAX_IMAGE_PIXELS != 1_000_000  # Pillow's own limit is left as it was


def test_decodes_in_threads_leave_pillow_s_own_limits_as_they_were():
    """decode turns two of Pillow's module settings off while it runs: decodes in threads at
    once (and one refused there) must not restore each other's values and leave them off."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import PngImagePlugin

    before = Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK
    small, bomb = _encoded(Image.new("RGB", (8, 8))), _encoded(Image.new("L", (1100, 1100)))

    def one(index: int) -> str:
        try:
            return decode(bomb if index % 100 == 0 else small, max_pixels=1_000_000).conversions
        except DecodeError as error:
            return error.reason
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(4000)))
    assert outcomes.count("too_many_pixels") == 40 and outcomes.count(()) == 3960
    assert (Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK) == before == (
        89_478_485, 1 << 20)  # Pillow's defaults, as its documentation gives them


@pytest.mark.parametrize("format", ["GIF", "TIFF", "PNG", "WEBP"])
def test_an_animation_or_a_multi_page_file_gives_its_first_frame_and_says_so(small_image,
                                                                            format):
    frames = [Image.fromarray(np.roll(small_image, 30 * i, axis=1)) for i in range(3)]
    if format == "GIF":
        frames = [frame.quantize(256) for frame in frames]
    data = _encoded(frames[0], format, save_all=True, append_images=frames[1:])
    decoded = decode(data)
    with Image.open(io.BytesIO(data)) as first:
        np.testing.assert_array_equal(decoded.pixels, np.asarray(first.convert("RGB")))
    said = "first frame of an animation" if format == "GIF" else "first of 3 frames"
    assert said in decoded.conversions
    assert not any("frame" in c for c in decode(_encoded(frames[0].convert("RGB"), format))
                   .conversions)  # one frame: nothing to say


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
def test_signed_tiffs_are_refused_not_wrapped_or_clipped(small_image, dtype):
    """A signed TIFF (SampleFormat 2) has no agreed map to 8 bits, as floats have none:
    refused, whatever its values (Pillow opens int8 as 8-bit gray, wrapping -1 to 255)."""
    import tifffile

    for values in (small_image[..., 0].astype(dtype) // 2 - 60,  # some below 0
                   small_image[..., 0].astype(dtype) // 2):         # none below 0
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, values)
        with pytest.raises(DecodeError) as refused:
            decode(buffer.getvalue())
        assert str(refused.value) == ("unsupported_mode: signed integer pixels (TIFF "
                                      "SampleFormat 2): no agreed map to 8 bits")


def test_unsigned_16_bit_tiffs_are_kept_and_wider_integers_refused(small_image):
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, small_image[..., 0].astype(np.uint16) * 257)
    assert np.array_equal(decode(buffer.getvalue()).pixels[..., 0], small_image[..., 0])
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, small_image[..., 0].astype(np.uint32) * 70_000)
    with pytest.raises(DecodeError, match=r"unsupported_mode: integer pixels 0\.\.\d+, "
                                          r"outside the 16-bit range"):
        decode(buffer.getvalue())


def test_integer_pixels_up_to_65535_are_the_16_bit_range_and_kept():
    """_to_rgb refuses integer pixels outside 0..65535 only: a 32-bit TIFF (Pillow's mode I)
    of values 257 k, 65535 the top, reads as k, as a 16-bit one does."""
    import tifffile

    values = np.arange(256, dtype=np.uint32).reshape(16, 16) * 257
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, values)
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I"
    decoded = decode(buffer.getvalue()).pixels
    np.testing.assert_array_equal(decoded[..., 0], values // 257)


def test_an_opaque_alpha_is_dropped_not_composited():
    """An alpha of 255 everywhere hides nothing: the colour is the file's, and decode does
    not record a compositing that changed nothing."""
    rgba = np.dstack([np.full((8, 8, 3), 77, np.uint8), np.full((8, 8), 255, np.uint8)])
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, "PNG")
    decoded = decode(buffer.getvalue())
    np.testing.assert_array_equal(decoded.pixels, rgba[..., :3])
    assert not any("composited" in conversion for conversion in decoded.conversions)


@pytest.mark.parametrize("format, signature", [("JPEG", b"\xff\xd8\xff"), ("PNG", b"\x89PNG")])
def test_an_image_with_a_damaged_header_is_corrupt_not_a_non_image(small_image, format,
                                                                    signature):
    data = bytearray(_encoded(Image.fromarray(small_image), format))
    assert data.startswith(signature)
    data[12:40] = b"\xff" * 28  # the signature stays; the header after it is broken
    with pytest.raises(DecodeError) as refused:
        decode(bytes(data))
    assert (refused.value.reason, str(refused.value)) == (
        "corrupt", f"corrupt: a {format} signature, but its header cannot be read")
    for other in (b"plain text, not an image", b"<html><body>a page</body></html>", b"ab",
                  b"P", b"#define WIDTH 8", b"%!PS-Adobe-3.0", b"\x01\x00\x00\x00 x"):
        with pytest.raises(DecodeError) as refused:
            decode(other)
        assert refused.value.reason == "not_an_image"


def test_formats_that_are_not_images_here_are_never_opened(monkeypatch, tmp_path):
    """An EPS file named .png: Pillow's EPS plugin would run Ghostscript on its bytes. Only
    the plugins of the image formats a source may be are offered: it is not an image, and no
    program is started (a `gs` on PATH that would leave a mark leaves none)."""
    marker = tmp_path / "gs-ran"
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gs.parent}:{os.environ['PATH']}")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 600 450\nshowpage\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # what Pillow alone would make of it
    with pytest.raises(DecodeError) as refused:
        decode(eps)
    assert refused.value.reason == "not_an_image" and not marker.exists()


@pytest.mark.parametrize(("mode", "key"), [("RGB", (10, 20, 30)), ("L", 10), ("I;16", 0),
                                         ("1", 0), ("L;2", 1), ("L;4", 1)])
def test_a_transparent_colour_is_composited_on_white_in_every_mode(mode, key):
    """A PNG's tRNS colour key marks pixels transparent as a palette's does; at 1, 2, 4, 8 and
    16 bits, those pixels come out white (the others as they are), as RGBA's transparent ones
    (Pillow gives 1-4-bit pixels scaled to 0..255 and their key raw)."""
    if mode in ("1", "L;2", "L;4"):
        bits = {"1": 1, "L;2": 2, "L;4": 4}[mode]
        raw = np.array([[key, 1 - key], [1 - key, key]], np.uint8)  # the key at (0, 0)
        scale = 255 // (2 ** bits - 1)
        image = (Image.fromarray(raw.astype(bool)) if bits == 1
                 else Image.fromarray(raw * scale, "L"))
        decoded = decode(_encoded(image, bits=bits, transparency=key))
        assert (decoded.pixels[0, 0] == 255).all()
        assert (decoded.pixels[0, 1] == (1 - key) * scale).all()
        return
    if mode == "I;16":
        values = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 1000)
        image = Image.fromarray(values)
        kept = (values[0, 1] / 257).round()
    else:
        values = np.full((4, 4, 3), (10, 20, 30), np.uint8)
        values[0, 1] = (1, 2, 3)
        image = Image.fromarray(values if mode == "RGB" else values[..., 0])
        kept = values[0, 1] if mode == "RGB" else values[0, 1, 0]
    decoded = decode(_encoded(image, transparency=key))
    assert (decoded.pixels[0, 0] == 255).all()  # the key colour
    assert (decoded.pixels[0, 1] == kept).all()
    assert "alpha composited on white" in " ".join(decoded.conversions)


def test_a_png_with_metadata_past_pillows_chunk_bound_decodes_and_past_its_total_is_named():
    """Pillow refuses a metadata chunk (ICC profile, XMP) that inflates past 1 MiB as it
    would a damaged file; an intact image with one decodes to its pixels, and metadata past
    Pillow's 64 MiB for all of it is `too_large`, not `corrupt`."""
    from PIL import PngImagePlugin

    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
    image = Image.fromarray(pixels)
    profiled = _encoded(image, icc_profile=b"\x01" * 10 + bytes(2 << 20))
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", "x" * (2 << 20), zip=True)
    with_xmp = _encoded(image, pnginfo=xmp)
    for data in (profiled, with_xmp):
        assert len(data) < 1 << 20  # compressed: a small file
        assert np.array_equal(decode(data).pixels, pixels)
    assert PngImagePlugin.MAX_TEXT_CHUNK == 1 << 20  # Pillow's own, as it was
    huge = _encoded(image, icc_profile=bytes(PngImagePlugin.MAX_TEXT_MEMORY + 1))
    with pytest.raises(DecodeError) as refused:
        decode(huge)
    assert refused.value.reason == "too_large" and "MiB" in str(refused.value)


def test_a_multi_page_tiff_whose_second_page_lost_its_size_is_corrupt(small_image):
    """Counting a file's pages reads them: Pillow raises TypeError ('Missing dimensions') on a
    page without ImageWidth and ImageLength, which must come out typed, as damage."""
    pages = [Image.fromarray(small_image), Image.fromarray(255 - small_image)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    data = bytearray(buffer.getvalue())
    assert data[:2] == b"II"  # little-endian: IFD offsets and entries as "<I", "<H"
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data,
                                                                                first)[0])[0]
    for entry in range(struct.unpack_from("<H", data, second)[0]):
        at = second + 2 + 12 * entry
        if struct.unpack_from("<H", data, at)[0] in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H", data, at, 65000)  # an unknown tag in their place
    with pytest.raises(DecodeError, match="corrupt: TypeError") as raised:
        decode(bytes(data))
    assert raised.value.reason == "corrupt"


def test_sixteen_bit_values_go_to_the_nearest_eight_bit_value():
    from shards.decode import to_eight_bits

    values = np.arange(65536, dtype=np.uint16)
    expected = np.clip(np.rint(values / 257), 0, 255)  # the formula, in floats
    np.testing.assert_array_equal(to_eight_bits(values), expected.astype(np.uint8))


@pytest.mark.parametrize("key", [0, 1])
def test_a_one_bit_pngs_transparent_value_is_composited_either_way(key):
    bits = np.array([[0, 255], [255, 0]], np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(bits).convert("1").save(buffer, "PNG", transparency=key)
    decoded = decode(buffer.getvalue())
    assert "LA: alpha composited on white" in decoded.conversions
    transparent = bits == 255 * key
    np.testing.assert_array_equal(decoded.pixels[transparent], 255)  # on white
    np.testing.assert_array_equal(decoded.pixels[~transparent][:, 0], bits[~transparent])


@pytest.mark.parametrize("format", ["TIFF", "JPEG", "PNG"])
def test_an_exif_orientation_is_applied_once_and_recorded_in_every_format(format):
    """Pillow turns a TIFF upright itself as it loads it (and drops the tag): recorded all the
    same. Orientation 6: the picture turned 90 degrees clockwise."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:6, :10] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format, exif=exif, **({"quality": 95} if format == "JPEG" else {}))
    decoded = decode(buffer.getvalue())
    assert decoded.conversions == ("EXIF orientation 6 applied",)
    assert decoded.original_size == (40, 20)  # as stored (a TIFF's too: Pillow's is upright)
    upright = np.rot90(pixels, k=-1)
    assert decoded.pixels.shape == upright.shape
    assert np.abs(decoded.pixels.astype(int) - upright).mean() < 3  # (JPEG's loss)


def test_a_header_gives_the_size_decode_gives_and_refuses_what_decode_refuses(small_image,
                                                                               tmp_path):
    """header_size reads the header only (fit-ensemble's and the benchmark loaders' checks
    before hours of work): its answer is the decoded image's upright size in every
    orientation and format, and a file decode refuses for its header it refuses for the
    same reason (a truncated body alone shows only at decode)."""
    image = Image.fromarray(small_image[:, :150])  # 150 wide, 176 high
    for format, orientation in itertools.product(["TIFF", "JPEG", "PNG", "WEBP"], range(1, 9)):
        exif = image.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f"{orientation}.{format.lower()}"
        path.write_bytes(_encoded(image, format, exif=exif))
        height, width, _ = decode(path.read_bytes()).pixels.shape
        assert header_size(path) == (width, height), (format, orientation)
    exif = image.getexif()
    exif[0x0112] = 6
    chunks = _chunks(_encoded(image, "PNG", exif=exif))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"eXIf", b"IDAT", b"IEND"]
    late = _png([chunks[0], chunks[2], chunks[1], chunks[3]])  # its EXIF after the pixels
    (tmp_path / "late.png").write_bytes(late)
    assert decode(late).pixels.shape == (150, 176, 3) and header_size(tmp_path / "late.png") \
        == (176, 150)
    garbled = _png([chunks[0], (b"IDAT", b"x" * 100), chunks[3]])  # only a decode sees it
    (tmp_path / "garbled.png").write_bytes(garbled)
    assert header_size(tmp_path / "garbled.png") == (150, 176)
    with pytest.raises(DecodeError, match="corrupt"):
        decode(garbled)
    damaged = bytearray(_encoded(image, "PNG"))
    damaged[12:40] = b"\xff" * 28
    refused = {"pcx.png": _encoded(image, "PCX"), "icon.png": _encoded(image, "ICO"),
               "eps.png": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 600 450\n",
               "text.png": b"not an image", "empty.png": b"", "damaged.png": bytes(damaged),
               "huge.png": _encoded(Image.new("L", (1100, 1000)))}
    for name, data in refused.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DecodeError) as by_decode:
            decode(data, max_pixels=1_000_000)
        with pytest.raises(DecodeError) as by_header:
            header_size(tmp_path / name, max_pixels=1_000_000)
        assert by_header.value.reason == by_decode.value.reason, name
    assert str(by_header.value) == "too_many_pixels: 1100x1000 exceeds 1000000 pixels"


def test_a_jpeg_altered_inside_its_scan_decodes_to_other_pixels_a_known_limit(small_image):
    """JPEG carries no checksum: a bit flipped in its entropy-coded data (bit rot, a bad copy)
    leaves a file that decodes without error to other pixels: libjpeg's warnings (which decode
    reads) name only some such files, not this one. The README says so; a corpus that
    ships checksums is checked against them before a run."""
    intact = _encoded(Image.fromarray(small_image), "JPEG", quality=90)
    scan = intact.index(b"\xff\xda")  # start of scan: the entropy-coded data follows
    altered = bytearray(intact)
    altered[(scan + len(intact)) // 2] ^= 0x10
    decoded = decode(bytes(altered))
    assert decoded.pixels.shape == small_image.shape
    assert not np.array_equal(decoded.pixels, decode(intact).pixels)


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_short_and_given_an_end_marker_is_corrupt(small_image, progressive):
    """Cut within its scan and ended with EOI, a JPEG decodes in Pillow without an error (its
    missing blocks made up: a flat band); libjpeg warns "premature end of data segment", and
    decode says so. The intact file decodes with nothing recorded."""
    intact = _encoded(Image.fromarray(small_image), "JPEG", quality=90, progressive=progressive)
    ended_early = intact[:len(intact) * 2 // 3] + b"\xff\xd9"
    assert np.asarray(Image.open(io.BytesIO(ended_early)).convert("RGB")).shape == \
        small_image.shape  # what Pillow alone takes
    with pytest.raises(DecodeError, match="premature end of data segment") as raised:
        decode(ended_early)
    assert raised.value.reason == "corrupt"
    assert decode(intact).conversions == ()


def test_a_jpeg_with_bytes_left_over_before_its_end_is_decoded_and_recorded(small_image):
    """Bytes between a JPEG's scan and its end marker (padding some writers add, or a scan
    damaged so it ends early) make libjpeg warn of extraneous bytes: the pixels are Pillow's,
    the warning recorded."""
    intact = _encoded(Image.fromarray(small_image), "JPEG", quality=90)
    padded = intact[:-2] + b"\x12\x34\x56" + intact[-2:]
    decoded = decode(padded)
    assert np.array_equal(decoded.pixels, decode(intact).pixels)
    assert len(decoded.conversions) == 1  # (libjpeg counts the bytes its last read left)
    assert re.fullmatch(r"libjpeg warned: Corrupt JPEG data: [23] extraneous bytes before marker "
                        r"0xd9 \(the pixels may be damaged\)", decoded.conversions[0])


def test_an_icc_profile_is_not_applied_and_one_other_than_srgb_is_recorded():
    """skimage's rocket.jpg embeds Adobe RGB (1998), astronaut.png sRGB: both decode to the
    values Pillow reads without colour management; the Adobe one says so in its conversions,
    as does a profile that cannot be read."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    for name, recorded in (("rocket.jpg", ["ICC profile 'Adobe RGB (1998)' not applied (values "
                                           "read as sRGB)"]),
                           ("astronaut.png", [])):
        data = (folder / name).read_bytes()
        decoded = decode(data)
        assert list(decoded.conversions) == recorded
        assert np.array_equal(decoded.pixels,
                              np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    damaged = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(damaged, format="PNG",
                                                         icc_profile=b"not a profile")
    assert decode(damaged.getvalue()).conversions == (
        "an ICC profile that cannot be read, not applied (values read as sRGB)",)


@pytest.mark.parametrize("channels", [3, 4])
def test_deep_colour_jpeg2000_goes_to_the_nearest_eight_bit_value(channels):
    """Pillow opens a 16-bit colour JPEG 2000 as 8-bit RGB(A), rounding its whitest values
    over to black (65408 and up -> 0); decode takes OpenCV's 16-bit values and rounds them
    as any 16-bit image's, and records it."""
    columns = np.array([0, 32768, 65280, 65407, 65408, 65535], np.uint16)
    values = np.repeat(np.repeat(columns, 64)[None, :, None], 64, 0).repeat(channels, 2)
    if channels == 4:
        values[..., 3] = 65535  # opaque
    written, data = cv2.imencode(".jp2", values)
    assert written
    held = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # the file's values (lossy coding)
    assert held.dtype == np.uint16
    decoded = decode(data.tobytes())
    expected = np.clip(np.rint(held[..., 2::-1] / 257), 0, 255)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.pixels[0, ::64, 0].min() == 0 and decoded.pixels[0, -1, 0] == 255
    assert f"{'RGBA' if channels == 4 else 'RGB'};16->8-bit" in decoded.conversions


def test_an_eight_bit_jpeg2000_is_read_as_pillow_reads_it_with_no_conversion():
    """Only JPEG 2000 of more than 8 bits per value takes the deep-colour path: an ordinary
    8-bit one decodes to the values Pillow (OpenJPEG) reads, with nothing converted."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG2000", irreversible=False)  # lossless
    decoded = decode(buffer.getvalue())
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        np.testing.assert_array_equal(decoded.pixels, np.asarray(image.convert("RGB")))
    np.testing.assert_array_equal(decoded.pixels, pixels)
    assert not any("8-bit" in conversion for conversion in decoded.conversions)


def test_jpeg2000_components_are_read_from_the_codestream():
    """The bits of each component in the size segment (SIZ) of a JP2 file's codestream box
    and of a bare codestream; none for bytes holding none."""
    from shards.decode import jpeg2000_components

    eight = np.zeros((64, 64, 3), np.uint8)
    assert jpeg2000_components(cv2.imencode(".jp2", eight)[1].tobytes()) == [(8, False)] * 3
    deep = cv2.imencode(".jp2", eight.astype(np.uint16))[1].tobytes()
    assert jpeg2000_components(deep) == [(16, False)] * 3
    buffer = io.BytesIO()
    Image.fromarray(eight).save(buffer, "JPEG2000", no_jp2=True)  # a bare codestream
    assert buffer.getvalue()[:4] == b"\xff\x4f\xff\x51"
    assert jpeg2000_components(buffer.getvalue()) == [(8, False)] * 3
    assert jpeg2000_components(b"\x00\x00\x00\x0cjP  \r\n\x87\n") == []
    assert jpeg2000_components(b"") == []


@pytest.mark.parametrize("ssiz", [7, 0x80 | 15])  # an 8-bit alpha; a signed one
def test_a_deep_jpeg2000_of_mixed_or_signed_components_is_refused(ssiz):
    """Components of other depths (OpenCV gives each at its own) or signed ones have no one
    map to 8 bits: refused as unsupported, never scaled by the wrong depth."""
    values = np.full((64, 64, 4), 65535, np.uint16)
    data = bytearray(cv2.imencode(".jp2", values)[1].tobytes())
    siz = data.index(b"\xff\x4f\xff\x51")  # SOC, SIZ: Csiz at 40, Ssiz every 3 from 42
    assert struct.unpack_from(">H", data, siz + 40)[0] == 4
    data[siz + 42 + 3 * 3] = ssiz  # the alpha's
    with pytest.raises(DecodeError, match="unsupported_mode: JPEG 2000 of") as raised:
        decode(bytes(data))
    assert raised.value.reason == "unsupported_mode"


@pytest.mark.parametrize("bits", [9, 10, 12, 14, 16])
def test_deep_values_go_to_the_nearest_eight_bit_value(bits):
    from shards.decode import to_eight_bits

    values = np.arange(2 ** bits, dtype=np.uint16)
    expected = np.rint(values.astype(np.float64) * 255 / (2 ** bits - 1))  # in floats
    np.testing.assert_array_equal(to_eight_bits(values, bits), expected.astype(np.uint8))


@pytest.mark.parametrize("tagged", [True, False])
def test_a_tiffs_orientation_turns_its_sizes_wherever_it_is_stated(tagged):
    """A TIFF turned by its Orientation tag or only by its XMP's tiff:Orientation: stored
    400x300, upright 300x400, in decode's pixels, its original_size and header_size alike."""
    from shards.decode import decode, header_size

    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
           b' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300)).save(buffer, "TIFF", tiffinfo={274: 6} if tagged else {700: xmp})
    decoded = decode(buffer.getvalue())
    assert decoded.pixels.shape[:2] == (400, 300)  # rows, columns: upright
    assert decoded.original_size == (400, 300)
    with tempfile.NamedTemporaryFile(suffix=".tiff") as file:
        file.write(buffer.getvalue())
        file.flush()
        assert header_size(file.name) == (300, 400)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_orientation_stated_only_in_xmp_is_applied(fmt):
    """XMP's tiff:Orientation 6 (turn 90 degrees clockwise), with no EXIF: the pixels come
    upright, as numpy's quarter turn makes them, and the stored size is kept."""
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:3, -3:] = 255  # the top right corner: bottom right once turned
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           '02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
           ' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    buffer = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp)
        Image.fromarray(stored).save(buffer, fmt, pnginfo=info)
    else:
        Image.fromarray(stored).save(buffer, fmt, xmp=xmp.encode(), quality=100, lossless=True)
    decoded = decode(buffer.getvalue())
    upright = np.rot90(stored, k=-1)
    assert decoded.pixels.shape == upright.shape and decoded.original_size == (40, 30)
    assert np.abs(decoded.pixels.astype(int) - upright).max() <= (0 if fmt != "JPEG" else 40)
    assert "EXIF orientation 6 applied" in decoded.conversions
