"""The TFLite flavours this package writes, as data: one row per mode. Adding a mode is adding a row
(and, for a new kind of conversion, one entry in `tflite.converter`'s table of recipes)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """What a file must reach to pass. Accuracy drop is in fractions (0.01 = 1 point)."""

    min_top1_agreement: float
    min_top5_overlap: float
    min_sqnr_db: float
    max_accuracy_drop: float

    def __post_init__(self):
        for name in ("min_top1_agreement", "min_top5_overlap", "max_accuracy_drop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1 and not (
                    name == "max_accuracy_drop" and value == float("inf")):
                raise ValueError(f"threshold {name} is a fraction from 0 to 1 (0.97 = 97%, 0.01 = 1 point); got "
                                 f"{value!r}.")
        if isinstance(self.min_sqnr_db, bool) or not isinstance(self.min_sqnr_db, numbers.Real) \
                or self.min_sqnr_db != self.min_sqnr_db:
            raise ValueError(f"threshold min_sqnr_db is a number of decibels; got {self.min_sqnr_db!r}.")


# Float files must be near-identical to Keras; files with int8 weights but float (or 16-bit)
# activations close; fully int8 files within int8's known error. Documented in the README.
FLOAT32_THRESHOLDS = Thresholds(min_top1_agreement=0.99, min_top5_overlap=0.97, min_sqnr_db=35.0,
                                max_accuracy_drop=0.005)
FLOAT16_THRESHOLDS = Thresholds(min_top1_agreement=0.99, min_top5_overlap=0.97, min_sqnr_db=30.0,
                                max_accuracy_drop=0.005)
WEIGHTS8_THRESHOLDS = Thresholds(min_top1_agreement=0.99, min_top5_overlap=0.95, min_sqnr_db=20.0,
                                 max_accuracy_drop=0.01)
INT8_THRESHOLDS = Thresholds(min_top1_agreement=0.97, min_top5_overlap=0.90, min_sqnr_db=15.0,
                             max_accuracy_drop=0.02)


@dataclass(frozen=True)
class Mode:
    """One TFLite flavour: how the converter makes it, what its file takes and gives, how it is judged."""

    name: str
    recipe: str  # the converter recipe (tflite.converter.RECIPES): float32, dynamic, float16, int16x8, integer, qat
    calibrated: bool  # needs representative data
    integer: bool  # int8 arithmetic inside (quantized activations)
    input_type: str  # dtype of the file's input tensor
    output_type: str
    thresholds: Thresholds
    takes_qat_model: bool = False  # converts a quantization-aware-trained model (its trained ranges)


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("float32", "float32", False, False, "float32", "float32", FLOAT32_THRESHOLDS),
        Mode("dynamic", "dynamic", False, False, "float32", "float32", WEIGHTS8_THRESHOLDS),
        Mode("float16", "float16", False, False, "float32", "float32", FLOAT16_THRESHOLDS),
        Mode("int8", "integer", True, True, "int8", "int8", INT8_THRESHOLDS),
        Mode("uint8", "integer", True, True, "uint8", "uint8", INT8_THRESHOLDS),
        Mode("int8_float_io", "integer", True, True, "float32", "float32", INT8_THRESHOLDS),
        Mode("int16x8", "int16x8", True, False, "float32", "float32", WEIGHTS8_THRESHOLDS),
        Mode("qat", "qat", False, True, "int8", "int8", INT8_THRESHOLDS, takes_qat_model=True),
        Mode("qat_uint8", "qat", False, True, "uint8", "uint8", INT8_THRESHOLDS, takes_qat_model=True),
    )
}


def get_mode(name: str) -> Mode:
    """The mode called `name`, or a ValueError that lists the modes there are."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mode {name!r}; choose one of: {', '.join(MODES)}.") from None
