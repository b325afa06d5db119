"""Reading image files and folders into RGB arrays, with errors that name the file.

One decoder and one resize for the whole package (`decode_image`, `resize_image`, TensorFlow ops usable
in tf.data and in a SavedModel), so a file gives the same pixels in training, calibration, verify,
predict and serving."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
#: The formats TensorFlow's decoder (tf.io.decode_image) reads, by their first bytes (WebP is told apart from
#: other RIFF files by `_is_webp`); PIL reads many more (TIFF, HEIC, ...), so PIL opening a file is not enough.
TF_FORMATS = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"BM", "BMP"))
FORMAT_NAMES = "JPEG, PNG, GIF, BMP and still WebP"
#: First bytes of formats people rename to .jpg/.png by mistake, to say what the file really is.
OTHER_FORMATS = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "RIFF (not WebP: audio or video?)"),
                 (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"8BPS", "Photoshop"), (b"%PDF", "PDF"),
                 (b"\x00\x00\x01\x00", "ICO"), (b"<svg", "SVG"), (b"<?xml", "XML/SVG"))


@dataclass
class ImageFolder:
    """The image files of a folder: one class per subfolder, or a flat folder of unlabelled images."""

    paths: list[Path]
    labels: list[int] | None  # None for a flat folder
    class_names: list[str]


def scan_folder(folder: str | os.PathLike) -> ImageFolder:
    """List the images of `folder` (class subfolders, sorted by name, or a flat folder of images)."""
    root = Path(folder)
    if not root.exists():
        raise ValueError(f"image folder {root} does not exist.")
    if not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder of images.")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders:
        paths, labels, names, other = [], [], [], []
        for label, sub in enumerate(subfolders):
            files = _images_below(sub, other)
            names.append(sub.name)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise ValueError(f"{root} has class folders ({', '.join(names[:5])}) but no images "
                             f"({', '.join(IMAGE_SUFFIXES)}) in them.")
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + UNREAD_SUFFIXES]
        if loose:
            _warn(f"{len(loose)} image(s) at the top of {root}, beside its class folders, belong to no class and "
                  f"are left out: {_listed(loose)}")
        if other:
            _warn(f"left out {len(other)} file(s) in formats TensorFlow's decoder can't read: {_listed(other)}; "
                  "convert them to JPEG or PNG to use them")
        return ImageFolder(paths, labels, names)
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and _regular(p))
    other = [p for p in root.iterdir() if p.suffix.lower() in UNREAD_SUFFIXES]
    if other and paths:
        _warn(f"left out {len(other)} file(s) in formats TensorFlow's decoder can't read: {_listed(other)}; "
              "convert them to JPEG or PNG to use them")
    if not paths:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no class folders.")
    return ImageFolder(paths, None, [])


#: Image formats people keep beside their JPEGs that TensorFlow's decoder does not read: left out, with a warning.
UNREAD_SUFFIXES = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".jxl", ".ico", ".svg")


def _images_below(folder: Path, other: list | None = None) -> list[Path]:
    """Every image file under `folder`, nested folders too, in the order Keras's
    image_dataset_from_directory lists them (it walks class folders recursively, following links).
    A folder reached again through a link (a loop) is walked once; only regular files count (a FIFO named
    x.jpg would block the reader). Files of `UNREAD_SUFFIXES` go to `other`."""
    found, walked, irregular = [], set(), []
    for here, subfolders, files in sorted(_walk_once(folder, walked), key=lambda entry: entry[0]):
        for name in sorted(files):
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                (found if _regular(Path(here) / name) else irregular).append(Path(here) / name)
            elif suffix in UNREAD_SUFFIXES and other is not None:
                other.append(Path(here) / name)
    if irregular:
        _warn(f"left out {len(irregular)} image name(s) that are not regular files (broken links, FIFOs, "
              f"devices): {_listed(irregular)}")
    return found


def _walk_once(folder: Path, walked: set):
    top = os.path.realpath(folder)
    for here, subfolders, files in os.walk(folder, followlinks=True):
        subfolders.sort()  # of two links to one folder, the first by name is the one read: the same on every copy
        real = os.path.realpath(here)
        # a link back to a folder already walked, or up to one that holds this class folder (its parent:
        # the other classes), is a loop
        if real in walked or (real != top and os.path.commonpath([real, top]) == real):
            subfolders[:] = []
            continue
        walked.add(real)
        yield here, subfolders, files


def _regular(path: Path) -> bool:
    try:
        return path.is_file()  # follows links; False for FIFOs, sockets and devices
    except OSError:
        return False


def _listed(paths: list) -> str:
    return ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


_WARNED: set[str] = set()


def _warn(message: str) -> None:
    """Warn once per process: a folder is scanned by several steps of one command."""
    import warnings

    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _is_animated_webp(head: bytes) -> bool:
    """An extended WebP (VP8X chunk) whose flags byte has the animation bit: TensorFlow's decoder reads such a
    file only by corrupting the heap (TF 2.21, a native decode aborts the process), so it is never handed one."""
    return _is_webp(head) and head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)


ANIMATED_WEBP = ("an animated WebP, which TensorFlow's WebP decoder can't read (it reads still WebP only); "
                 "save one frame as PNG or JPEG")


def tensorflow_format_problem(path: str | os.PathLike) -> str | None:
    """Why TensorFlow's image decoder can't read `path` judging by its first bytes, or None when it is
    a JPEG, PNG, GIF, BMP or still WebP."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as exc:
        return f"can't be opened ({exc.strerror or exc})"
    if not head:
        return "is empty (0 bytes)"
    if _is_animated_webp(head):
        return f"is {ANIMATED_WEBP}"
    if _is_webp(head) or any(head.startswith(magic) for magic, _ in TF_FORMATS):
        return None
    what = next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)
    suffix = Path(path).suffix or "(no suffix)"
    if what:
        return (f"is a {what} file named {suffix}; only {FORMAT_NAMES} images are read (TensorFlow's decoders): "
                "convert it, e.g. to PNG")
    return (f"is not a {FORMAT_NAMES.replace(' and ', ' or ')} file (the formats images are read in, with "
            "TensorFlow's decoders)")


#: How every image of this package is resized: training, validation, calibration folders, verify,
#: predict and the SavedModel's `serving_bytes` signature all go through `resize_image`.
RESIZE_METHOD = "bilinear"
ANTIALIAS = True


#: The most pixels an image may declare in its header before the decoder allocates them: PIL's own bound for
#: a decompression bomb (twice `Image.MAX_IMAGE_PIXELS`), which `load_image` and the folder pre-checks apply
#: through PIL. Held in the graph too, for `serving_bytes`: a 100 KB PNG declaring 40,000 x 40,000 pixels
#: asked for about 24 GB (15 bytes a pixel: the uint8 decode, then float32 for the resize).
MAX_DECLARED_PIXELS = 2 * 89_478_485


def _header(encoded, length: int = 32):
    """The first `length` bytes of an encoded image, zero-padded: a shorter string reaches the decoder's own
    reason instead of failing a header test on its position."""
    import tensorflow as tf

    return tf.strings.substr(tf.strings.join([tf.strings.substr(encoded, 0, length), b"\x00" * length]), 0, length)


def _starts(head, prefix: bytes, at: int = 0):
    import tensorflow as tf

    return tf.equal(tf.strings.substr(head, at, len(prefix)), prefix)


def _number(head, start: int, length: int, big_endian: bool = False):
    """An unsigned integer of `length` bytes at `start` in a `_header`, as int64."""
    import tensorflow as tf

    digits = tf.cast(tf.io.decode_raw(tf.strings.substr(head, start, length), tf.uint8), tf.int64)
    weights = [256 ** (length - 1 - i) if big_endian else 256 ** i for i in range(length)]
    return tf.reduce_sum(digits * tf.constant(weights, tf.int64))


def _declared_pixels(head, is_webp):
    """Width x height as the `_header` of a PNG or WebP says (int64; 0 for other bytes), in a graph.
    TensorFlow's JPEG decoder refuses more than 2^29 bytes of pixels before allocating them, and its BMP
    decoder a file shorter than its pixels, so neither is a bomb; PNG and WebP allocated whatever their header
    declared (a GIF's images are bounded by `_gif_walk`)."""
    import tensorflow as tf

    lossless = _number(head, 21, 4)
    cases = [  # (is this format, by the signature TensorFlow's decoder checks, lambda: width * height)
        (_starts(head, b"\x89PNG\r\n\x1a\n"), lambda: _number(head, 16, 4, True) * _number(head, 20, 4, True)),
        (tf.logical_and(is_webp, _starts(head, b"VP8X", 12)),
         lambda: (_number(head, 24, 3) + 1) * (_number(head, 27, 3) + 1)),
        (tf.logical_and(is_webp, _starts(head, b"VP8 ", 12)),
         lambda: tf.bitwise.bitwise_and(_number(head, 26, 2), 0x3FFF)
         * tf.bitwise.bitwise_and(_number(head, 28, 2), 0x3FFF)),
        (tf.logical_and(is_webp, _starts(head, b"VP8L", 12)),
         lambda: (tf.bitwise.bitwise_and(lossless, 0x3FFF) + 1)
         * (tf.bitwise.bitwise_and(tf.bitwise.right_shift(lossless, 14), 0x3FFF) + 1)),
    ]
    return tf.case(cases, default=lambda: tf.constant(0, tf.int64), exclusive=True)


JPEG_XL = "a JPEG XL image, which the package doesn't read; convert it to PNG or JPEG"


#: GIF block-walk steps allowed per byte of the file, past a base: an encoder writes image data in sub-blocks of
#: up to 255 bytes, so a real GIF needs about one step per 255 bytes; a crafted one of 1-byte sub-blocks kept a
#: walk of one step per 2 bytes busy for 23 s (2 MB) before this cap.
GIF_STEPS = (4096, 16)
TINY_GIF_BLOCKS = "a GIF made of more tiny blocks than any encoder writes; save it again or convert it to PNG"
_GIF_WALK = None


def _gif_walk(encoded):
    """What the GIF's blocks say, before its decoder allocates anything: (end of the first image's data, image
    count, first image's width and height, largest width and height of any image, whether the walk hit its
    step cap), int32 except the last. TensorFlow's GIF decoder makes an output of every image at the largest
    image's size (not the screen descriptor's: a screen of 10 x 10 over an image of 6,000 x 5,000 passed a
    check of the screen), so these bound what it allocates. Always a graph: run eagerly, the walk took 26 s for
    a 7 MB GIF; as a graph 0.26 s, against 0.04 s for the decode itself (27,000 sub-blocks of 255 bytes)."""
    global _GIF_WALK
    import tensorflow as tf

    if _GIF_WALK is None:
        _GIF_WALK = tf.function(_walk_gif_blocks, input_signature=[tf.TensorSpec([], tf.string)])
    return _GIF_WALK(encoded)


def _walk_gif_blocks(encoded):
    """Block by block: header (6 bytes), screen descriptor (7, its global colour table's size in byte 10), then
    extensions (0x21, a label, sub-blocks) and images (0x2C, a 9-byte descriptor, a local colour table, the LZW
    code size byte, sub-blocks) until the trailer; each chain of sub-blocks (a length byte, then that many bytes)
    ends with a 0 length and is skipped by a tight inner loop, a step per sub-block. A byte that starts no block
    ends the walk."""
    import tensorflow as tf

    data = tf.cast(tf.io.decode_raw(encoded, tf.uint8), tf.int32)
    size = tf.size(data)
    data = tf.concat([data, tf.zeros([1024], tf.int32)], 0)  # reads past the end see zeros
    cap = GIF_STEPS[0] + size // GIF_STEPS[1]

    def table(packed):  # the size of the colour table a packed byte announces
        return tf.where(tf.bitwise.bitwise_and(packed, 0x80) > 0,
                        3 * tf.bitwise.left_shift(2, tf.bitwise.bitwise_and(packed, 7)), 0)

    def past_chain(start, steps):
        position, steps = tf.while_loop(
            lambda at, steps: tf.logical_and(tf.logical_and(at < size, data[at] > 0), steps < cap),
            lambda at, steps: (at + data[at] + 1, steps + 1), (start, steps))
        return position + 1, steps

    def next_block(position, end, images, first_w, first_h, most_w, most_h, steps, going):
        here = data[position]
        extension, image = tf.equal(here, 0x21), tf.equal(here, 0x2C)
        going = tf.logical_or(extension, image)
        start = tf.where(extension, position + 2, position + 11 + table(data[position + 9]))
        after, steps = tf.cond(going, lambda: past_chain(start, steps), lambda: (position, steps))
        width = data[position + 5] + 256 * data[position + 6]
        height = data[position + 7] + 256 * data[position + 8]
        first = tf.logical_and(image, tf.equal(images, 0))
        return (after, tf.where(first, after, end), images + tf.cast(image, tf.int32),
                tf.where(first, width, first_w), tf.where(first, height, first_h),
                tf.where(image, tf.maximum(most_w, width), most_w), tf.where(image, tf.maximum(most_h, height), most_h),
                steps + 1, going)

    zero = tf.constant(0)
    position, end, images, first_w, first_h, most_w, most_h, steps, going = tf.while_loop(
        lambda position, *rest: tf.logical_and(tf.logical_and(rest[-1], position < size), rest[-2] < cap),
        next_block, (13 + table(data[10]), tf.constant(-1), zero, zero, zero, zero, zero, zero, tf.constant(True)))
    capped = tf.logical_and(tf.logical_and(going, position < size), steps >= cap)
    return end, images, first_w, first_h, most_w, most_h, capped


def decode_image(encoded):
    """Encoded JPEG, PNG, GIF, BMP or WebP bytes (a scalar string tensor) to a uint8 RGB tensor
    [height, width, 3], with TensorFlow's decoders, in a graph or eagerly.

    Grayscale is repeated over RGB, RGBA (PNG or WebP) loses its alpha (not composited, as PIL's
    convert("RGB")), palette PNG and GIF are expanded, CMYK JPEG is converted by libjpeg, a 16-bit PNG keeps
    the high byte of each sample (value // 256), the first frame of an animated GIF is used (and decoded
    alone where it can be: see `_gif_walk`). A palette
    (8 bits or fewer per pixel) BMP is refused: TensorFlow's BMP decoder reads its palette indices as gray
    levels. An animated WebP is refused before it reaches the decoder (see `_is_animated_webp`).
    """
    import tensorflow as tf

    encoded = tf.convert_to_tensor(encoded, tf.string)
    is_bmp = tf.equal(tf.strings.substr(encoded, 0, 2), b"BM")
    # biBitCount, little endian, at byte 28; padded (with 24s) so that a string shorter than that reaches the
    # decoder's own "Unknown image file format" instead of failing here on the position
    header = tf.strings.substr(tf.strings.join([tf.strings.substr(encoded, 0, 30), b"\x18\x00" * 15]), 28, 2)
    bits = tf.cond(is_bmp, lambda: tf.cast(tf.io.decode_raw(header, tf.uint16)[0], tf.int32), lambda: tf.constant(24))
    check = tf.debugging.Assert(bits > 8, ["a palette BMP (8 bits or fewer per pixel), which TensorFlow's "
                                           "decoder misreads; convert it to PNG"])
    # the same tests as _is_webp / _is_animated_webp, on the zero-padded header
    head = _header(encoded)
    is_webp = tf.logical_and(_starts(head, b"RIFF"), _starts(head, b"WEBP", 8))
    flags = tf.io.decode_raw(tf.strings.substr(head, 20, 1), tf.uint8)[0]
    animated = tf.logical_and(tf.logical_and(is_webp, _starts(head, b"VP8X", 12)),
                              tf.not_equal(tf.bitwise.bitwise_and(flags, 2), 0))
    not_animated = tf.debugging.Assert(tf.logical_not(animated), [ANIMATED_WEBP])
    # TensorFlow also decodes JPEG XL, with no bound on the size its header declares; the package reads the
    # five formats above (load_image and the folder checks refuse it by its name and header too)
    jpeg_xl = tf.logical_or(_starts(head, b"\xff\x0a"), _starts(head, b"\x00\x00\x00\x0cJXL \r\n\x87\n"))
    not_jpeg_xl = tf.debugging.Assert(tf.logical_not(jpeg_xl), [JPEG_XL])
    is_gif = _starts(head, b"GIF8")
    none = (tf.constant(-1),) + (tf.constant(0),) * 5 + (tf.constant(False),)
    end, images, first_w, first_h, most_w, most_h, capped = tf.cond(is_gif, lambda: _gif_walk(encoded), lambda: none)
    # TensorFlow's GIF decoder decodes every image at the largest one's size before the first is taken (150
    # frames of 1,500 x 1,500 in 550 KB took 336 MB): when the first image is that large, the bytes are cut
    # after it, which decodes to the same first frame; otherwise all of them count against the bound
    cut = tf.logical_and(tf.logical_and(is_gif, end > 0), tf.logical_and(tf.equal(first_w, most_w),
                                                                         tf.equal(first_h, most_h)))
    gif_pixels = tf.cast(tf.where(cut, 1, images), tf.int64) * tf.cast(most_w, tf.int64) * tf.cast(most_h, tf.int64)
    pixels = tf.where(is_gif, gif_pixels, _declared_pixels(head, is_webp))
    not_too_large = tf.debugging.Assert(pixels <= MAX_DECLARED_PIXELS, [
        "an image whose header declares", pixels, f"pixels, more than {MAX_DECLARED_PIXELS:,} (a decompression "
        "bomb, or a photo far larger than the model needs): shrink it"])
    not_tiny_blocks = tf.debugging.Assert(tf.logical_not(capped), [TINY_GIF_BLOCKS])
    with tf.control_dependencies([check, not_animated, not_jpeg_xl, not_too_large, not_tiny_blocks]):
        # the bytes themselves pass through the checks: a decoder inside a cond waits for its data input, where
        # the cond's own control inputs did not hold once it held a loop (an animated WebP reached its decoder)
        encoded = tf.identity(encoded)
    # TensorFlow's WebP decoder takes no channel count but the file's own (3, or 4 with alpha): decoded as it
    # is, then the alpha dropped as for PNG
    image = tf.cond(
        is_webp,
        lambda: tf.io.decode_image(encoded, channels=0, dtype=tf.uint8, expand_animations=False)[:, :, :3],
        lambda: tf.io.decode_image(
            tf.cond(cut, lambda: tf.strings.join([tf.strings.substr(encoded, 0, end), b"\x3b"]), lambda: encoded),
            channels=3, dtype=tf.uint8, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def resize_image(image, size):
    """An image tensor [height, width, 3] (any dtype, 0..255) resized to `size` (height, width): float32
    pixels rounded to whole values in 0..255, so they equal the uint8 pixels a phone or `load_image` gives.

    Bilinear with antialias: when shrinking (a 4,000 px photo to 128 px) the antialiased filter averages
    every source pixel under the output pixel, as PIL and phone image libraries do, where plain bilinear
    samples only 4 of them and the result depends on aliasing (a few pixels' shift changes the
    prediction). When enlarging (CIFAR's 32 px to 128 px) it equals plain bilinear. It is the one resize
    of the package, so training, calibration, verification, predict and the SavedModel see the same
    pixels for the same file.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    resized = tf.image.resize(image, size, method=RESIZE_METHOD, antialias=ANTIALIAS)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def decode_and_resize(encoded, size):
    """`decode_image` then `resize_image`: encoded bytes to float32 RGB pixels (whole values 0..255) of `size`."""
    return resize_image(decode_image(encoded), size)


def header_problem(path) -> str | None:
    """What the header says is wrong with `path` (unknown format, too large for memory), or None."""
    problem = tensorflow_format_problem(path)
    if problem is not None:
        return problem
    from PIL import Image

    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # said below with the file's name
            with Image.open(path) as img:  # reads the header only: the size, before any pixel is decoded
                img.size
    except Image.DecompressionBombWarning as exc:
        _warn(f"{path} is a very large image ({' '.join(str(exc).split())}); reading it takes much memory")
        return None
    except Image.DecompressionBombError as exc:
        return f"is too large to read safely ({' '.join(str(exc).split())}); shrink it or remove it"
    except Exception:  # noqa: BLE001 - the decoder below says what is wrong with the pixels
        return None
    return None


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read one image as uint8 RGB with `decode_image`, resized to (height, width) with `resize_image`.

    Raises a ValueError naming the file when it is not an image TensorFlow's decoders read.
    """
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"{path} can't be read ({exc.strerror or exc}).") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path} is a folder; give image files (such as {Path(path) / '*.jpg'}).")
    if not stat.S_ISREG(mode):  # a FIFO's open waits for a writer forever
        raise ValueError(f"{path} is not a regular file (a FIFO, socket or device); give an image file.")
    problem = header_problem(path)
    if problem is not None:
        raise ValueError(f"{path} is not a readable image: it {problem}.")
    import tensorflow as tf

    try:
        encoded = Path(path).read_bytes()
        image = decode_image(encoded) if size is None else decode_and_resize(encoded, tuple(size))
        return np.asarray(image.numpy(), dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path} can't be read ({exc.strerror or exc}).") from None
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        raise ValueError(f"{path} is not a readable image ({decoder_reason(exc)}).") from None


def decoder_reason(exc) -> str:
    import re

    text = " ".join(str(getattr(exc, "message", exc)).split())
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)  # TensorFlow's name for the op that ran
    text = re.sub(r"\s*\[Op:\w+\](?: name:\s*\S*)?\s*$", "", text)  # and its eager op's
    if "palette BMP" in text:
        return "a palette BMP (8 bits or fewer per pixel), which TensorFlow's decoder misreads; convert it to PNG"
    if "animated WebP" in text:
        return ANIMATED_WEBP
    if "JPEG XL" in text:
        return JPEG_XL
    if "tiny blocks" in text:
        return TINY_GIF_BLOCKS
    if "header declares" in text:
        declared = re.search(r"header declares\W*(\d+)", text)
        return (f"its header declares {int(declared.group(1)):,} pixels" if declared else "too many pixels") + \
            f", more than {MAX_DECLARED_PIXELS:,}; shrink it"
    return "TensorFlow's decoder: " + text[:200].rstrip(". ")  # the caller's sentence ends it


def decode_files(paths, size: tuple[int, int] | None = None,
                 keep_bytes: int | None = None) -> tuple[list[np.ndarray] | None, list[int]]:
    """Decode many files at once (a parallel tf.data pass, no Python per image): the uint8 images at
    their own size (or resized to `size`) in order, and the indices of the files that failed.

    `keep_bytes`: once the decoded images pass this many bytes they are let go and None is returned in
    their place, the rest still decoded to find the files that fail: a check of a folder too large for
    memory holds one image at a time (0: check only)."""
    import tensorflow as tf

    paths = [str(p) for p in paths]
    if not paths:
        return [], []

    def read(index, path):
        image = decode_image(tf.io.read_file(path))
        if size is not None:
            image = tf.cast(resize_image(image, size), tf.uint8)
        return index, image

    dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    images: list | None = [None] * len(paths)
    decoded = np.zeros(len(paths), bool)
    held = 0
    for index, image in dataset.as_numpy_iterator():
        decoded[int(index)] = True
        if images is not None:
            held += image.nbytes
            if keep_bytes is not None and held > keep_bytes:
                images = None
            else:
                images[int(index)] = image
    bad = [int(i) for i in np.flatnonzero(~decoded)]
    return (None if images is None else [image for image in images if image is not None]), bad


def load_images(paths, size: tuple[int, int]) -> tuple[np.ndarray, list[Path]]:
    """Read many images resized to `size`; unreadable ones are skipped and returned in the second item."""
    paths = [Path(p) for p in paths]
    header_bad = {i for i, p in enumerate(paths) if header_problem(p) is not None}
    good = [p for i, p in enumerate(paths) if i not in header_bad]
    arrays, failed = decode_files(good, size)
    bad = sorted([paths[i] for i in header_bad] + [good[i] for i in failed], key=paths.index)
    if not arrays:
        return np.zeros((0, *size, 3), np.uint8), bad
    return np.stack(arrays), bad
