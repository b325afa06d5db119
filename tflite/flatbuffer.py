"""What a .tflite file holds: tensor types, ops, and which quantization mode produced it."""

from __future__ import annotations

import os
from pathlib import Path


def read_model(path_or_bytes: str | os.PathLike | bytes):
    """The file parsed into the flatbuffer object API (ai_edge_litert's schema)."""
    from ai_edge_litert import schema_py_generated as schema

    content = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))


def _type_names():
    from ai_edge_litert import schema_py_generated as schema

    return {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}


def operator_names(model) -> list[str]:
    """Builtin op names of the main graph in order ('CONV_2D', ...); 'CUSTOM:name' or 'FLEX' otherwise."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    names = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        op_code = max(code.builtinCode, code.deprecatedBuiltinCode)
        if op_code == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if code.customCode else "?"
            names.append("FLEX" if custom.startswith("Flex") else f"CUSTOM:{custom}")
        else:
            names.append(builtin[op_code])
    return names


def detect_mode(model) -> str:
    """Which of this package's modes a file looks like, from its tensor types.

    int8 and qat files look the same; files from other tools are named by the same rules.
    """
    names = _type_names()
    graph = model.subgraphs[0]
    types = {names[t.type] for t in graph.tensors}
    input_type = names[graph.tensors[graph.inputs[0]].type]
    conv_inputs = {
        names[graph.tensors[op.inputs[0]].type]
        for op, op_name in zip(graph.operators, operator_names(model))
        if op_name in ("CONV_2D", "DEPTHWISE_CONV_2D")
    }
    if "INT16" in conv_inputs:
        return "int16x8"
    if input_type == "INT8":
        return "int8"
    if input_type == "UINT8":
        return "uint8"
    if "INT8" in conv_inputs:
        return "int8_float_io"
    if "FLOAT16" in types:
        return "float16"
    if "INT8" in types:
        return "dynamic"
    return "float32"


def float_layers(model) -> list[str]:
    """Names (as in the file) of the convolutions that run in float inside an integer file."""
    names = _type_names()
    graph = model.subgraphs[0]
    out = []
    for op, op_name in zip(graph.operators, operator_names(model)):
        if op_name in ("CONV_2D", "DEPTHWISE_CONV_2D") and names[graph.tensors[op.inputs[0]].type] == "FLOAT32":
            out.append(graph.tensors[op.outputs[0]].name.decode())
    return out


def op_counts(model) -> dict[str, int]:
    """{"float": ops that compute in float32, "int16": ops with int16 activations} of the main graph.

    An op counts as float when one of its activation tensors (not a constant) is float32: inside an
    integer file these are the layers kept in float and the QUANTIZE / DEQUANTIZE pairs around them.
    The QUANTIZE that reads a float input of the file and the DEQUANTIZE that writes a float output
    (an int8_float_io file's boundary) are not counted. A float32 file counts every op.
    """
    names = _type_names()
    ops = operator_names(model)
    graph = model.subgraphs[0]
    inputs, outputs = set(graph.inputs), set(graph.outputs)

    def activations(op):
        for index in list(op.inputs) + list(op.outputs):
            if index < 0:
                continue
            tensor = graph.tensors[index]
            buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
            if buffer is not None and buffer.data is not None and len(buffer.data):
                continue  # a constant (weights, bias, shape)
            yield names[tensor.type]

    counts = {"float": 0, "int16": 0}
    for op, name in zip(graph.operators, ops):
        if name == "QUANTIZE" and set(op.inputs) <= inputs:
            continue
        if name == "DEQUANTIZE" and set(op.outputs) <= outputs:
            continue
        types = set(activations(op))
        if "FLOAT32" in types:
            counts["float"] += 1
        if "INT16" in types:
            counts["int16"] += 1
    return counts


def float_tensors_inside(model) -> list[str]:
    """Names of the float32 tensors (activations or constants) other than the file's own inputs and
    outputs: empty for a fully integer file, int8_float_io included (its float input and output are
    the boundary)."""
    names = _type_names()
    graph = model.subgraphs[0]
    boundary = set(graph.inputs) | set(graph.outputs)
    found = []
    for index, tensor in enumerate(graph.tensors):
        if index not in boundary and names[tensor.type] == "FLOAT32":
            found.append(tensor.name.decode())
    return found
