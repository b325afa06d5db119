"""The TFLite flavours this package writes, as data: what each needs and what its file takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    description: str
    calibrated: bool  # needs representative data
    integer: bool  # int8 arithmetic inside (quantized activations)
    input_type: str  # dtype of the file's input tensor
    output_type: str
    dynamic_batch: bool = True  # batch_size=None supported


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("float32", "float32 weights and arithmetic", False, False, "float32", "float32"),
        Mode("dynamic", "int8 weights, float activations (dynamic-range)", False, False, "float32", "float32"),
        Mode("float16", "float16 weights, float32 arithmetic", False, False, "float32", "float32"),
        Mode("int8", "full integer, int8 input and output", True, True, "int8", "int8"),
        Mode("uint8", "full integer inside, uint8 input (raw pixels) and output: Android image classifiers",
             True, True, "uint8", "uint8"),
        Mode("int8_float_io", "full integer inside, float input and output", True, True, "float32", "float32"),
        Mode("int16x8", "16-bit activations, 8-bit weights (slow on CPU)", True, False, "float32", "float32"),
        Mode("qat", "int8 from a quantization-aware-trained model, int8 input and output", False, True,
             "int8", "int8"),
        Mode("qat_uint8", "int8 from a quantization-aware-trained model, uint8 input (raw pixels) and output",
             False, True, "uint8", "uint8"),
    )
}


def get_mode(name: str) -> Mode:
    """The mode called `name`, or a ValueError that lists the modes there are."""
    try:
        return MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mode {name!r}; choose one of: {', '.join(MODES)}.") from None
