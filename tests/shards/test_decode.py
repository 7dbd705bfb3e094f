"""The decoder's records of what it did, and its refusals, say what happened in the file's own
terms: its size against the limit given, the frames it leaves out."""

import io

import numpy as np
import pytest
from PIL import Image

from shards.decode import DecodeError, decode


def _encoded(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("side", [1100, 1500])  # above twice the limit, and between
def test_a_bomb_is_refused_naming_its_size_and_the_limit_given(side):
    with pytest.raises(DecodeError) as refused:
        decode(_encoded(Image.new("L", (side, side))), max_pixels=1_000_000)
    assert refused.value.reason == "too_many_pixels"
    assert str(refused.value) == f"too_many_pixels: {side}x{side} exceeds 1000000 pixels"
    assert Image.MAX_IMAGE_PIXELS != 1_000_000  # Pillow's own limit is left as it was


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
