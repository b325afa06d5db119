"""TFLite metadata and MediaPipe's own image classifier, run by a Python that has `mediapipe`.

mediapipe 1.2.3 cannot share this package's environment (it pins absl-py~=2.3 against
tensorflow-model-optimization's ~=1.2), so this file imports nothing from the package or from
TensorFlow: `mobilenet_keras.deploy.android` runs it as a script with a separate interpreter
(`python -m venv .venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe==1.2.3`).

    python mediapipe_metadata.py write IN.tflite OUT.tflite --labels labels.txt --name N --version 1
    python mediapipe_metadata.py classify MODEL.tflite IMAGE...      # one JSON line per image

`write` uses MediaPipe's image-classifier metadata writer. Its wheel lacks the compiled module that
computes `min_parser_version`; `min_parser_version` below computes it from the schema's history for
the fields that are set, and is installed in its place.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

_PYWRAP = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
#: The process id of the package's process that runs this script; set by `mobilenet_keras.deploy.android`.
PARENT_PID_ENV = "MOBILENET_KERAS_PARENT_PID"


def min_parser_version(metadata_buffer: bytes) -> str:
    """The lowest metadata parser version that understands every field set (metadata_schema.fbs's history)."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    metadata = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytearray(metadata_buffer), 0))
    found = [(1, 0, 0)]
    files = list(metadata.associatedFiles or [])
    for subgraph in metadata.subgraphMetadata or []:
        files += list(subgraph.associatedFiles or [])
        if subgraph.inputProcessUnits or subgraph.outputProcessUnits:
            found.append((1, 1, 0))
        if subgraph.inputTensorGroups or subgraph.outputTensorGroups:
            found.append((1, 2, 0))
        if getattr(subgraph, "customMetadata", None):
            found.append((1, 5, 0))
        for tensor in list(subgraph.inputTensorMetadata or []) + list(subgraph.outputTensorMetadata or []):
            files += list(tensor.associatedFiles or [])
            if tensor.content and tensor.content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                found.append((1, 3, 0))
            for unit in tensor.processUnits or []:
                if unit.optionsType in (fb.ProcessUnitOptions.BertTokenizerOptions,
                                        fb.ProcessUnitOptions.SentencePieceTokenizerOptions):
                    found.append((1, 1, 0))
                elif unit.optionsType == fb.ProcessUnitOptions.RegexTokenizerOptions:
                    found.append((1, 2, 1))
    for file in files:
        if file.type == fb.AssociatedFileType.VOCABULARY:
            found.append((1, 0, 1))
        elif file.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
            found.append((1, 4, 0))
        if file.version:
            found.append((1, 4, 1))
    return ".".join(str(part) for part in max(found))


def _install_version_module() -> None:
    if _PYWRAP in sys.modules:
        return
    parts = _PYWRAP.split(".")
    for i in range(3, len(parts)):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    module = types.ModuleType(_PYWRAP)
    module.GetMinimumMetadataParserVersion = min_parser_version
    sys.modules[_PYWRAP] = module
    setattr(sys.modules[".".join(parts[:-1])], parts[-1], module)


def write(model: bytes, labels: list[str], name: str, description: str, version: str, mean: float,
          std: float) -> bytes:
    """The model with image-classifier metadata: general info, image input with its normalization
    ((pixel - mean) / std), and `labels` as the output's TENSOR_AXIS_LABELS file (`labels.txt`)."""
    _install_version_module()
    from mediapipe.tasks.python.metadata.metadata_writers import image_classifier, metadata_info, metadata_writer

    writer = image_classifier.MetadataWriter.create(bytearray(model), input_norm_mean=[mean], input_norm_std=[std],
                                                    labels=metadata_writer.Labels().add(list(labels)))
    # The image-classifier writer names the model generically and has no version argument.
    general = metadata_info.GeneralMd(name=name, version=version, description=description)
    writer.writer._general_md = general  # noqa: SLF001
    content, _ = writer.populate()
    del writer  # its temporary folder goes now, not at interpreter exit (where its __del__ fails)
    return bytes(content)


def classify(model_path: str, image_paths: list[str], max_results: int = 5) -> list[dict]:
    """MediaPipe Tasks' ImageClassifier (the C++ classifier Android apps use) on each image."""
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model_path),
                                            max_results=max_results)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in image_paths:
            categories = classifier.classify(mp.Image.create_from_file(path)).classifications[0].categories
            results.append({"image": path, "top": [{"index": c.index, "label": c.category_name, "score": c.score}
                                                    for c in categories]})
    return results


def die_with_parent() -> None:
    """End this process when the package's process that started it ends, kill -9 included (Linux): else it
    goes on writing into a scratch folder that is swept away, or holding the CPU for a file no one will read."""
    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # started through a wrapper script, or the parent ended before the line above
        try:
            os.kill(int(parent), 0)
        except ProcessLookupError:
            print(f"mediapipe_metadata.py: the process that started it ({parent}) has ended; stopping.",
                  file=sys.stderr)
            os._exit(1)
        except OSError:  # another user's process by that number: it runs
            pass


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    parser = argparse.ArgumentParser(description="TFLite metadata and MediaPipe's ImageClassifier (needs mediapipe).")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write image-classifier metadata and labels into a .tflite file")
    w.add_argument("model")
    w.add_argument("out")
    w.add_argument("--labels", required=True, help="labels.txt, one label per line in output order")
    w.add_argument("--name", default="MobileNet V1")
    w.add_argument("--description", default="MobileNet V1 image classifier (mobilenet-keras)")
    w.add_argument("--version", default="1")
    w.add_argument("--mean", type=float, default=127.5)
    w.add_argument("--std", type=float, default=127.5)
    c = sub.add_parser("classify", help="classify images with MediaPipe's ImageClassifier; one JSON line each")
    c.add_argument("model")
    c.add_argument("images", nargs="+")
    c.add_argument("--max-results", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "write":
        with open(args.model, "rb") as f:
            model = f.read()
        with open(args.labels, encoding="utf-8") as f:
            labels = [line.rstrip("\n") for line in f if line.strip()]
        content = write(model, labels, args.name, args.description, args.version, args.mean, args.std)
        temporary = args.out + ".tmp"
        with open(temporary, "wb") as f:
            f.write(content)
        os.replace(temporary, args.out)
    else:
        for result in classify(args.model, args.images, args.max_results):
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
