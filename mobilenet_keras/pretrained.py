"""Where Keras's published MobileNet V1 ImageNet weights live, and which (alpha, size) pairs exist.

Kept apart from the builder so that the architecture never depends on a download.
"""

from __future__ import annotations

BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"

# Width multiplier -> the token Keras uses in its file names.
ALPHA_TOKENS: dict[float, str] = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}
SIZES: tuple[int, ...] = (128, 160, 192, 224)
CLASSES = 1000
CLASS_INDEX_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
)


def file_name(alpha: float, size: int, include_top: bool) -> str:
    """Keras's file name for the published weights of (alpha, size), with or without the top."""
    suffix = "" if include_top else "_no_top"
    return f"mobilenet_{ALPHA_TOKENS[alpha]}_{size}_tf{suffix}.h5"


def check_published(alpha: float, rows: int | None, cols: int | None, include_top: bool,
                    depth_multiplier: int, classes: int) -> int:
    """Return the size whose published weights fit, or raise a ValueError that says what fits.

    Without the top the convolution weights fit any resolution, so a size with no file of
    its own takes the 224 file, as keras.applications does.
    """
    if alpha not in ALPHA_TOKENS:
        raise ValueError(
            f"ImageNet weights are published for alpha in {sorted(ALPHA_TOKENS)}; got alpha={alpha}. "
            "Use one of those, or weights=None to train from scratch."
        )
    if depth_multiplier != 1:
        raise ValueError(
            f"ImageNet weights exist only for depth_multiplier=1; got {depth_multiplier}."
        )
    if include_top and classes != CLASSES:
        raise ValueError(
            f"ImageNet weights with include_top=True have {CLASSES} classes; got classes={classes}. "
            "Use include_top=False and put your own head on, or classes=1000."
        )
    if rows == cols and rows in SIZES:
        return rows
    if include_top:
        raise ValueError(
            f"ImageNet weights with the top are published for square inputs of {list(SIZES)} pixels; "
            f"got {rows}x{cols}. Use one of those sizes, or include_top=False (any size from 32 up)."
        )
    return 224
