"""One preprocessing path: the same photo gives the same pixels and probabilities from model.keras, the
float32 .tflite and the SavedModel's serving_bytes, and odd image files (16-bit, palette, CMYK, grayscale,
RGBA, WebP) decode to the same RGB through predict, the folder pre-check and the training datasets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenet_keras.images import decode_and_resize, load_image
from mobilenet_keras.training import datasets
from tests.conftest import IMAGES, WEIGHTS_025, require

SIZE = 128
PHOTOS = ("chelsea.png", "coffee.png", "cat.bmp", "parrot.jpg", "bird.bmp")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The 0.25 ImageNet backbone with a seeded 10-class head at 128 px, as .keras, float32 .tflite and SavedModel."""
    import keras

    import tflite
    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.deploy.saved_model import export_saved_model

    keras.utils.set_random_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the backbone file has no head: a random one is what this test wants
        model = MobileNetV1(input_shape=(SIZE, SIZE, 3), alpha=0.25, classes=10, weights=str(require(WEIGHTS_025)))
    head = model.get_layer("conv_preds")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 8, bias])  # spread the scores: a clear top-1 and probabilities far from 0.1
    folder = tmp_path_factory.mktemp("same_photo")
    model.save(folder / "model.keras")
    tflite.convert(model, folder / "model_float32.tflite", "float32")
    export_saved_model(model, folder / "saved_model")
    return folder


def test_the_same_photo_gets_the_same_probabilities_from_every_format(exported):
    from mobilenet_keras.app.predict import scores

    photos = [require(IMAGES) / name for name in PHOTOS]
    by_format = {name: scores(exported / name, photos) for name in ("model.keras", "model_float32.tflite",
                                                                      "saved_model")}
    keras_probs = by_format["model.keras"]
    assert keras_probs.max(axis=1).min() > 0.2  # not a flat distribution: the comparison means something
    for name, probs in by_format.items():
        np.testing.assert_allclose(probs, keras_probs, atol=0.01, err_msg=name)
        np.testing.assert_array_equal(probs.argmax(1), keras_probs.argmax(1), err_msg=name)
        assert np.abs(probs - keras_probs).max() < 1e-3, name  # in fact float rounding only


def test_serving_bytes_decodes_as_load_image(exported):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported / "saved_model"))
    assert "serving_bytes" in loaded.signatures
    for name in PHOTOS:
        path = require(IMAGES) / name
        in_graph = tf.function(lambda e: decode_and_resize(e, (SIZE, SIZE)))(tf.constant(path.read_bytes()))
        np.testing.assert_array_equal(in_graph.numpy().astype(np.uint8), load_image(path, (SIZE, SIZE)))


def _odd_files(root):
    """The same 24 x 36 picture as RGB PNG, 16-bit RGB PNG, palette PNG, CMYK JPEG, grayscale PNG, RGBA
    PNG, lossy WebP, lossless RGB and RGBA WebP and an animated GIF, with the RGB each should decode to."""
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize((36, 24)))
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    Image.fromarray(smooth).save(root / "rgb.png")
    expected["rgb.png"] = smooth
    wide = smooth.astype(np.uint16) * 257 + rng.integers(0, 257, smooth.shape).astype(np.uint16)
    _png16(root / "deep16.png", wide)
    expected["deep16.png"] = (wide >> 8).astype(np.uint8)  # the high byte
    palette = Image.fromarray(smooth).convert("P", palette=Image.ADAPTIVE, colors=64)
    palette.save(root / "palette.png")
    expected["palette.png"] = np.asarray(palette.convert("RGB"))
    Image.fromarray(smooth).convert("CMYK").save(root / "cmyk.jpg", quality=100)
    expected["cmyk.jpg"] = smooth  # up to JPEG's loss
    gray = Image.fromarray(smooth).convert("L")
    gray.save(root / "gray.png")
    expected["gray.png"] = np.repeat(np.asarray(gray)[..., None], 3, axis=-1)
    rgba = np.concatenate([smooth, rng.integers(0, 256, (24, 36, 1), dtype=np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    expected["rgba.png"] = smooth  # alpha dropped, not composited
    Image.fromarray(smooth).save(root / "lossy.webp", quality=95)
    with Image.open(root / "lossy.webp") as lossy:  # WebP's loss, as libwebp in PIL decodes it
        expected["lossy.webp"] = np.asarray(lossy.convert("RGB"))
    Image.fromarray(smooth).save(root / "rgb.webp", lossless=True)
    expected["rgb.webp"] = smooth
    Image.fromarray(rgba, "RGBA").save(root / "rgba.webp", lossless=True, exact=True)
    expected["rgba.webp"] = smooth
    # an animated GIF (PIL crops its later frames to what changes): its first frame, decoded alone
    frames = [Image.fromarray(pixels).convert("P", palette=Image.ADAPTIVE, colors=32)
              for pixels in (smooth, 255 - smooth)]
    frames[1].paste(0, (0, 0, 10, 10))
    frames[0].save(root / "moving.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    with Image.open(root / "moving.gif") as moving:
        expected["moving.gif"] = np.asarray(moving.convert("RGB"))
    return expected


def _png16(path, pixels):
    """A 16-bit RGB PNG (PIL writes 16-bit grayscale only)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_odd_files_decode_to_the_same_rgb_in_predict_the_pre_check_and_the_datasets(tmp_path):
    root = tmp_path / "data"
    expected = _odd_files(root / "a")
    _odd_files(root / "b")
    for name, rgb in expected.items():
        got = load_image(root / "a" / name)
        assert got.shape == (24, 36, 3) and got.dtype == np.uint8, name
        tolerance = {"cmyk.jpg": 12, "lossy.webp": 2}.get(name, 0)  # libwebp's YUV to RGB may differ by a step
        assert np.abs(got.astype(int) - rgb).max() <= tolerance, name
    # The folder check accepts all of them, and the datasets give the pixels predict gives.
    loaded = datasets.image_folder(root, image_size=48, batch_size=4, validation_split=0.5, augment=False)
    assert loaded.num_train + loaded.num_validation == 2 * len(expected)
    folder_paths = sorted((root / c / n for c in "ab" for n in expected), key=lambda p: (p.parent.name, p.name))
    labels = [0 if p.parent.name == "a" else 1 for p in folder_paths]
    _, (validation_paths, _) = datasets.keras_split(folder_paths, labels, 0.5, 0)
    images, _ = loaded.validation_arrays()
    pixels = np.round((images + 1.0) * 127.5).astype(np.uint8)
    for path, got in zip(validation_paths, pixels):
        np.testing.assert_array_equal(got, load_image(path, (48, 48)), err_msg=str(path))


def test_a_palette_bmp_is_refused_everywhere_with_the_same_reason(tmp_path):
    root = tmp_path / "data"
    _odd_files(root / "a")
    _odd_files(root / "b")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("P").save(root / "b" / "indexed.bmp")
    with pytest.raises(ValueError, match="indexed.bmp.*palette BMP"):
        load_image(root / "b" / "indexed.bmp")
    with pytest.raises(ValueError, match="indexed.bmp.*palette BMP"):
        datasets.image_folder(root, image_size=32)


def _animated_webp(path):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert path.read_bytes()[12:16] == b"VP8X"


def test_an_animated_webp_is_refused_everywhere_before_the_decoder_sees_it(tmp_path):
    # TensorFlow 2.21's own decode of an animated WebP corrupts the heap (free(): invalid next size, exit 134):
    # each path refuses it by its header, this process (which runs all three) surviving is part of the test
    import tensorflow as tf

    from mobilenet_keras.images import decode_image

    root = tmp_path / "data"
    _odd_files(root / "a")
    _odd_files(root / "b")
    _animated_webp(root / "b" / "moving.webp")
    with pytest.raises(ValueError, match="moving.webp.*animated WebP.*save one frame"):
        load_image(root / "b" / "moving.webp")
    with pytest.raises(ValueError, match="moving.webp.*animated WebP"):
        datasets.image_folder(root, image_size=32)
    serving = tf.function(lambda e: decode_and_resize(e, (32, 32)), input_signature=[tf.TensorSpec([], tf.string)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="animated WebP"):
        serving(tf.constant((root / "b" / "moving.webp").read_bytes()))
    with pytest.raises(tf.errors.InvalidArgumentError, match="animated WebP"):
        decode_image(tf.constant((root / "b" / "moving.webp").read_bytes()))
    assert serving(tf.constant((root / "a" / "rgba.webp").read_bytes())).shape == (32, 32, 3)


@pytest.mark.parametrize("junk", [b"", b"abc", b"BM" + b"\0" * 10, b"x" * 40, b"RIFF\0\0\0\0WEBPVP8X", b"\xff\xd8",
                                  b"\x89PNG" + b"\xff" * 40])
def test_short_or_unknown_bytes_get_the_decoders_own_reason(junk):
    # what a serving client may send to serving_bytes: the decoder's own reason (empty input, unknown format,
    # incomplete BMP), not "pos 28 out of range" from the BMP header check on a string too short to hold one
    import tensorflow as tf

    from mobilenet_keras.images import decode_image

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        decode_image(tf.constant(junk))
    assert "out of range" not in str(info.value) and "DecodeImage" in str(info.value), str(info.value)[-300:]


def _large_png(path, width: int, height: int) -> None:
    """A real, valid black PNG of width x height, written row by row (a few hundred KB for 200M pixels)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, parts = zlib.compressobj(9), b"\0" * (1 + 3 * width), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def _status_kb(field: str) -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])


def _peak_kb() -> int:
    return _status_kb("VmHWM:")


def _reset_peak() -> int | None:
    """Start this process's peak RSS (VmHWM) again from now, so that a decode's peak shows whatever ran before
    (ru_maxrss never goes down: an earlier test's peak hid one); returns the resident KB now, or None where the
    kernel can't reset it (/proc/self/clear_refs), and the memory check can't be made."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_kb("VmRSS:")


def test_an_image_declaring_too_many_pixels_is_refused_by_its_header_in_the_graph(tmp_path):
    # serving_bytes decoded whatever a client sent: a 100 KB PNG of 6,000 x 6,000 grew the server by 570 MB,
    # one of 40,000 x 40,000 would ask for 24 GB. The graph reads the header first, as load_image does (PIL).

    import tensorflow as tf

    from mobilenet_keras.images import MAX_DECLARED_PIXELS, decode_image

    big = tmp_path / "huge.png"
    _large_png(big, 15_000, 12_000)  # 180M pixels, just past the bound
    assert 15_000 * 12_000 > MAX_DECLARED_PIXELS and big.stat().st_size < 2_000_000
    serving = tf.function(lambda e: decode_and_resize(e, (32, 32)), input_signature=[tf.TensorSpec([], tf.string)])
    before = _reset_peak()
    for decode in (serving, decode_image):
        with pytest.raises(tf.errors.InvalidArgumentError, match="(?s)header declares.*180000000.*shrink it"):
            decode(tf.constant(big.read_bytes()))
    assert before is None or _peak_kb() - before < 200_000  # KB: nothing was decoded
    with pytest.raises(ValueError, match="huge.png is not a readable image: it is too large to read safely"):
        load_image(big)
    # said in a line by load_image's callers too
    from mobilenet_keras.images import decoder_reason

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serving(tf.constant(big.read_bytes()))
    expected = f"its header declares 180,000,000 pixels, more than {MAX_DECLARED_PIXELS:,}; shrink it"
    assert decoder_reason(info.value) == expected


def test_a_jpeg_xl_image_is_refused_in_the_graph(tmp_path):
    # TensorFlow decodes JPEG XL too, allocating whatever size its header declares; the package reads the
    # five formats it documents (load_image refused it already, by its header)
    import tensorflow as tf

    from mobilenet_keras.images import JPEG_XL, decode_image, decoder_reason

    for head in (b"\xff\x0a" + b"\0" * 30, b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\0" * 30):
        with pytest.raises(tf.errors.InvalidArgumentError, match="JPEG XL") as info:
            decode_image(tf.constant(head))
        assert decoder_reason(info.value) == JPEG_XL
        (tmp_path / "x.jxl").write_bytes(head)
        with pytest.raises(ValueError, match="x.jxl is not a readable image"):
            load_image(tmp_path / "x.jxl")


GIF_WORKER = r"""
import sys
import tensorflow as tf
from mobilenet_keras.images import decode_and_resize, decode_image
def peak():  # VmHWM: this process's own peak (ru_maxrss carries the parent's across fork and exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024
data = open(sys.argv[1], "rb").read()
serving = tf.function(lambda e: decode_and_resize(e, (32, 32)), input_signature=[tf.TensorSpec([], tf.string)])
serving(tf.constant(open(sys.argv[2], "rb").read()))  # traced on a small GIF first: growth is the big one's
before = peak()
first = decode_image(tf.constant(data)).numpy()
serving(tf.constant(data))
print(first.shape, peak() - before)
"""


def _animated_gif(frames: int, side: int, local_palettes: bool = False) -> bytes:
    import io

    images = []
    for i in range(frames):
        image = Image.new("P", (side, side), i % 200)
        shift = i if local_palettes else 0  # a palette per frame: PIL writes local colour tables
        image.putpalette([v for c in range(256) for v in ((c + shift) % 256, (c * 7) % 256, 255 - c)])
        images.append(image)
    images[0].paste(17, (side // 10, side // 10, side // 2, side // 3))
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=50, loop=0, optimize=False)
    return buffer.getvalue()


def test_an_animated_gif_is_decoded_one_frame_only(tmp_path):
    """TensorFlow's GIF decoder decodes every frame at the canvas size before the first is taken: a 550 KB GIF
    of 150 frames of 1,500 x 1,500 grew the process by 270 MB (a red team measured 421 MB for 400 frames of
    1,000 x 1,000), past the bound on declared pixels, which counts one frame."""
    import io
    import os
    import subprocess
    import sys

    import tensorflow as tf

    from mobilenet_keras.images import decode_image

    for data in (_animated_gif(12, 40), _animated_gif(12, 40, local_palettes=True), _animated_gif(1, 40)):
        first = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert np.array_equal(decode_image(tf.constant(data)).numpy(), first)
        assert np.array_equal(tf.io.decode_gif(data).numpy()[0], first)  # TensorFlow's own first frame
    with pytest.raises(tf.errors.InvalidArgumentError):  # a cut file is still the decoder's to judge
        decode_image(tf.constant(_animated_gif(3, 40)[:200]))
    (tmp_path / "big.gif").write_bytes(_animated_gif(150, 1500))
    (tmp_path / "small.gif").write_bytes(_animated_gif(2, 40))
    done = subprocess.run([sys.executable, "-c", GIF_WORKER, str(tmp_path / "big.gif"), str(tmp_path / "small.gif")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    shape, grown = done.stdout.strip().rsplit(" ", 1)
    assert shape == "(1500, 1500, 3)" and int(grown) < 120, done.stdout  # MB; one frame is 6.75 MB


def _after_colour_table(data: bytes) -> int:
    """Where a GIF's first block starts: after the header, the screen descriptor and the global colour table."""
    return 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)


def _gif_with_frames(sizes_at: list, screen: tuple | None = None) -> bytes:
    """A GIF of solid frames, each (width, height, left, top), on `screen` (default: the first frame's size)."""
    import io
    import struct

    frames = []
    for i, (width, height, left, top) in enumerate(sizes_at):
        frame = Image.new("P", (width, height), 20 + 40 * i)
        frame.putpalette([v for c in range(256) for v in (c, 255 - c, (3 * c) % 256)])
        frames.append((frame, left, top))
    buffer = io.BytesIO()
    frames[0][0].save(buffer, "GIF", save_all=len(frames) > 1, append_images=[f for f, _, _ in frames[1:]],
                      optimize=False, disposal=1)
    data = bytearray(buffer.getvalue())
    # PIL writes each frame at (0, 0) on a screen of the first frame's size: set the places and the screen
    position, found = _after_colour_table(data), 0
    while data[position] != 0x3B:
        if data[position] == 0x21:
            position += 2
        else:
            _, _, width, height, _ = struct.unpack("<HHHHB", data[position + 1:position + 10])
            data[position + 1:position + 5] = struct.pack("<HH", *sizes_at[found][2:])
            found += 1
            packed = data[position + 9]
            position += 11 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
        while data[position]:
            position += data[position] + 1
        position += 1
    data[6:10] = struct.pack("<HH", *(screen or sizes_at[0][:2]))
    return bytes(data)


def test_a_gif_is_bounded_by_its_images_not_its_screen_and_decodes_as_tensorflows_first_frame(tmp_path):
    """TensorFlow's GIF decoder sizes its output by the largest image, not the screen descriptor that the pixel
    bound read (a screen of 10 x 10 over one image of 14,000 x 13,000 passed it); a first image smaller than a
    later one is not cut away from the others (its frame has the largest one's size); a GIF of 1-byte blocks
    kept the block walk busy for 23 s a 2 MB file."""
    import time

    import tensorflow as tf

    from mobilenet_keras.images import TINY_GIF_BLOCKS, decode_image, decoder_reason

    for frames, screen in (([(10, 6, 3, 4), (20, 20, 0, 0)], (20, 20)),  # a small first image, placed
                           ([(20, 20, 0, 0), (10, 6, 3, 4)], None),  # the first the largest: cut after it
                           ([(30, 20, 0, 0)], (10, 10))):  # one image larger than the screen
        data = _gif_with_frames(frames, screen)
        want = tf.io.decode_gif(data).numpy()[0]
        assert np.array_equal(decode_image(tf.constant(data)).numpy(), want), frames
    bomb = _gif_with_frames([(14_000, 13_000, 0, 0)], screen=(10, 10))
    assert len(bomb) < 2_000_000
    with pytest.raises(tf.errors.InvalidArgumentError, match="header declares") as info:
        decode_image(tf.constant(bomb))
    assert "182,000,000 pixels" in decoder_reason(info.value)
    # 2 MB of 1-byte sub-blocks in a comment extension, ahead of a 1 x 1 image
    tiny = _gif_with_frames([(1, 1, 0, 0)])
    blocks = _after_colour_table(tiny)
    tiny = tiny[:blocks] + b"\x21\xfe" + b"\x01x" * 1_000_000 + b"\x00" + tiny[blocks:]
    started = time.monotonic()
    with pytest.raises(tf.errors.InvalidArgumentError, match="tiny blocks") as info:
        decode_image(tf.constant(tiny))
    assert decoder_reason(info.value) == TINY_GIF_BLOCKS
    assert time.monotonic() - started < 15  # generous on a loaded 2-core machine; it was 23 s with no cap
    # XMP in a GIF ends in a 258-byte "magic trailer" that reads as 256 sub-blocks of 1 byte: still fine
    xmp = _gif_with_frames([(8, 8, 0, 0)])
    trailer = b"\x21\xffXMP DataXMP" + b"<x/>" + bytes([1] + list(range(255, -1, -1))) + b"\x00"
    blocks = _after_colour_table(xmp)
    xmp = xmp[:blocks] + trailer + xmp[blocks:]
    assert np.array_equal(decode_image(tf.constant(xmp)).numpy(), tf.io.decode_gif(xmp).numpy()[0])
