"""Running .tflite files with the LiteRT interpreter, in float or in their raw integer types."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mobilenet_keras.quiet import quiet_tensorflow
from tflite.flatbuffer import detect_mode, operator_names, read_model

FLATBUFFER_IDENTIFIER = b"TFL3"
_MIN_SIZE = 16

# How close to a half step (in steps) `quantize_input` rounds up as a tie.
TIE_MARGIN = 1e-3


class TFLiteModel:
    """A .tflite classifier (or any single-input, single-output model) loaded with LiteRT.

    Attributes:
        path: the file.
        input_shape, output_shape: as stored in the file (batch first).
        input_dtype, output_dtype: numpy dtypes of the file's input and output tensors.
        input_quantization, output_quantization: `(scale, zero_point)`, or `None` for float tensors.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, content: bytes | None = None):
        """Load `path` (or `content`, the bytes already read from `path`: a second interpreter of the same file,
        with other threads, sees what the first one saw even if the file changed since)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a .tflite file's path (str or pathlib.Path) is needed; got {type(path).__name__}.")
        self.path = Path(path)
        if content is None:
            content, self._model = _read_checked(self.path)
        else:
            self._model = _verify_flatbuffer(self.path, content)
        from ai_edge_litert.interpreter import Interpreter

        try:
            with quiet_tensorflow():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"{self.path} could not be loaded by the LiteRT interpreter: {one_line(exc)}") from None
        self._content = content
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "TFLiteModel runs single-input, single-output models.")
        self._input, self._output = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        # the sizes the file takes, None where any is taken (`input_shape` shows 1 there)
        self.input_signature = tuple(None if int(d) < 0 else int(d) for d in self._input["shape_signature"])
        self.output_shape = tuple(int(d) for d in self._output["shape"])
        self._dynamic_batch = int(self._input["shape_signature"][0]) == -1
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = _quantization(self._input)
        self.output_quantization = _quantization(self._output)
        self._batch = self.input_shape[0]

    def __repr__(self) -> str:
        return (f"TFLiteModel({str(self.path)!r}, input={self.input_shape} {self.input_dtype}, "
                f"output={self.output_shape} {self.output_dtype})")

    @property
    def size_bytes(self) -> int:
        return len(self._content)

    @property
    def content(self) -> bytes:
        """The file's bytes as they were read: what this interpreter runs."""
        return self._content

    @property
    def flatbuffer(self):
        """The file parsed into the flatbuffer object API (as `tflite.flatbuffer.read_model` gives it)."""
        return self._model

    def op_names(self) -> list[str]:
        """The ops of the file's graph, in order: builtin names ('CONV_2D'), 'FLEX' or 'CUSTOM:name'."""
        return operator_names(self._model)

    @property
    def mode(self) -> str:
        """The quantization mode the file looks like (see `tflite.flatbuffer.detect_mode`)."""
        return detect_mode(self._model)

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        """Run the file on tensors of its own input dtype and return its raw output tensor."""
        batch = np.asarray(batch)
        if batch.dtype != self.input_dtype:
            raise ValueError(f"{self.path.name} takes {self.input_dtype} input; got {batch.dtype}. "
                             "Use predict() for float images in the model's convention.")
        if batch.shape[1:] != self.input_shape[1:]:
            if batch.shape == self.input_shape[1:]:
                sides = ", ".join(map(str, batch.shape))
                raise ValueError(f"{self.path.name} takes a batch of images, shape (N, {sides}); got one image "
                                 f"{batch.shape}: add the batch axis (image[None]).")
            raise ValueError(f"{self.path.name} takes images of shape {self.input_shape[1:]}; got {batch.shape[1:]} "
                             f"(the batch {batch.shape}).")
        results = []
        step = len(batch) if self._dynamic_batch else self._batch
        for start in range(0, len(batch), step):
            chunk = batch[start:start + step]
            real = len(chunk)
            if real < step and not self._dynamic_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - real, axis=0)])
            if self._dynamic_batch and tuple(self._interpreter.get_input_details()[0]["shape"]) != chunk.shape:
                self._interpreter.resize_tensor_input(self._input["index"], chunk.shape)
                self._interpreter.allocate_tensors()
            try:
                self._interpreter.set_tensor(self._input["index"], chunk)
                self._interpreter.invoke()
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"{self.path} failed to run in the LiteRT interpreter (a damaged file?): "
                                 f"{one_line(exc)}") from None
            results.append(self._interpreter.get_tensor(self._output["index"])[:real].copy())
        return np.concatenate(results)

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        """Float images in the model's convention -> the file's input dtype."""
        images = np.asarray(images, dtype=np.float32)
        if self.input_quantization is None:
            return images.astype(self.input_dtype)
        scale, zero_point = self.input_quantization
        info = np.iinfo(self.input_dtype)
        # Half up, as TensorFlow's FakeQuant rounds: images from 8-bit pixels in MobileNet's convention
        # fall exactly half-way between two steps, and a QAT model's input quantizer sends them up.
        # (np.round's half-to-even would send alternate pixel values down, a different input.) A tie is
        # judged to a thousandth of a step: the file's float32 scale is not exactly 2/255, which put
        # pixel 255 a hair under its tie and one step down.
        steps = images.astype(np.float64) / scale + zero_point + 0.5 + TIE_MARGIN
        return np.clip(np.floor(steps), info.min, info.max).astype(self.input_dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if self.output_quantization is None:
            return raw.astype(np.float32)
        scale, zero_point = self.output_quantization
        return (raw.astype(np.float32) - zero_point) * scale

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Float images (batch, H, W, C) in the model's convention -> float outputs, any batch size."""
        return self.dequantize_output(self.predict_raw(self.quantize_input(images)))


def _quantization(details) -> tuple[float, int] | None:
    scale, zero_point = details["quantization"]
    if scale == 0 and zero_point == 0:
        return None
    return float(scale), int(zero_point)


def _read_checked(path: Path):
    if not path.exists():
        raise ValueError(f"{path} does not exist.")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a .tflite file.")
    if not path.is_file():  # reading a FIFO waits for a writer forever
        raise ValueError(f"{path} is not a regular file (a FIFO, socket or device); give a .tflite file.")
    content = path.read_bytes()
    if len(content) < _MIN_SIZE or content[4:8] != FLATBUFFER_IDENTIFIER:
        raise ValueError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier); "
                         "convert a model with tflite.convert first.")
    return content, _verify_flatbuffer(path, content)


def one_line(exc: BaseException | str) -> str:
    """An error's text on one line (the interpreter's messages span several)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _verify_flatbuffer(path: Path, content: bytes):
    """Parse the file and reject damaged ones before the interpreter sees them: it trusts offsets it reads.

    Checked: every graph has tensors and ops that point inside their tables (buffers, tensors, op
    codes), weight buffers inside the file, and every tensor an op reads is a graph input, an op's
    output, a variable, or a constant that has data (a damaged file otherwise fails part-way through
    a run with "Input tensor N lacks data").
    """
    try:
        model = read_model(content)
        buffers = model.buffers or []
        graphs = model.subgraphs or []
        codes = model.operatorCodes or []
        if not graphs:
            raise ValueError("no subgraph")
        for buffer in buffers:
            if buffer.offset and buffer.offset + buffer.size > len(content):
                raise ValueError("a weight buffer runs past the end of the file")
        for graph in graphs:
            tensors = graph.tensors or []
            for tensor in tensors:
                if not 0 <= tensor.buffer < max(len(buffers), 1):
                    raise ValueError(f"tensor {tensor.name!r} points at buffer {tensor.buffer}")
            inputs = [int(i) for i in _indices(graph.inputs)]
            outputs = [int(i) for i in _indices(graph.outputs)]
            operators = graph.operators or []
            produced = set(inputs)
            for op in operators:
                produced.update(int(i) for i in _indices(op.outputs))
            for index in inputs + outputs + sorted(produced):
                if not 0 <= index < len(tensors):
                    raise ValueError(f"tensor index {index} of a graph with {len(tensors)} tensors")
            for number, op in enumerate(operators):
                if not 0 <= op.opcodeIndex < len(codes):
                    raise ValueError(f"op {number} has op code {op.opcodeIndex} of {len(codes)}")
                for index in (int(i) for i in _indices(op.inputs)):
                    if index == -1:  # an optional input left out
                        continue
                    if not 0 <= index < len(tensors):
                        raise ValueError(f"op {number} reads tensor {index} of {len(tensors)}")
                    tensor = tensors[index]
                    if index not in produced and not tensor.isVariable and not _has_data(buffers, tensor.buffer):
                        raise ValueError(f"op {number} reads tensor {index}, a constant without data")
    except Exception as exc:  # the flatbuffer reader raises whatever a bad offset causes
        raise ValueError(f"{path} is damaged or truncated ({exc.__class__.__name__}: {one_line(exc)}).") from None
    return model


def _indices(values) -> list:
    return [] if values is None else list(values)


def _has_data(buffers, index: int) -> bool:
    if not 0 <= index < len(buffers):
        return False
    buffer = buffers[index]
    return (buffer.data is not None and len(buffer.data) > 0) or bool(buffer.offset and buffer.size)
