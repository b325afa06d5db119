"""The pipeline's report: plots as PNG files, and the markdown and JSON summaries."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mobilenet_keras.files import write_bytes_atomic, write_json_atomic
from mobilenet_keras.plotting import pyplot, save_figure


def shown_name(row: dict) -> str:
    """A verified file's name as reports show it: `model_int8.tflite` for the files in tflite/, with its
    folder for the others (`android/model.tflite`)."""
    path = Path(row["file"])
    return path.name if path.parent.name in ("tflite", "") else f"{path.parent.name}/{path.name}"


def probability_scatter(float_probs: np.ndarray, file_probs: np.ndarray, name: str, path: Path,
                        subject: str = "") -> Path:
    """Every class probability of every image: float model (x) against the file (y)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(float_probs.reshape(-1), file_probs.reshape(-1), s=4, alpha=0.3)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="identical answers")
    ax.set_xlabel("float Keras model: class probability")
    ax.set_ylabel(f"{name} .tflite file: class probability")
    ax.set_title(f"Float model vs the {name} file\n{subject}".strip(), fontsize=10)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def op_counts_cell(row: dict) -> str:
    """"float / int16" op counts of a verification row; "-" when the row has none (an older report)."""
    if row.get("float_ops") is None:
        return "-"
    return f"{row['float_ops']} / {row.get('int16_ops') or 0}"


# Accuracy differences of a few tenths of a point must not look like a cliff: the y-axis spans at least this.
MIN_ACCURACY_SPAN = 5.0


def size_accuracy(rows: list[dict], path: Path, subject: str = "", float_accuracy: float | None = None) -> Path:
    """File size against validation accuracy, one marker per file, named in the legend (labels never overlap)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    markers = "osD^v<>PX*h"
    values = []
    for i, row in enumerate(rows):
        if row.get("tflite_accuracy") is None:
            continue
        size, accuracy = row["size_bytes"] / 1024, 100 * row["tflite_accuracy"]
        values.append(accuracy)
        ax.scatter(size, accuracy, s=60, marker=markers[i % len(markers)], zorder=3,
                   label=f"{row['mode']}: {size:,.0f} KiB, {accuracy:.1f}%")
    if float_accuracy is not None:
        values.append(100 * float_accuracy)
        ax.axhline(100 * float_accuracy, color="k", linestyle="--", linewidth=1,
                   label=f"float Keras model: {100 * float_accuracy:.1f}%")
    if values:
        middle = (max(values) + min(values)) / 2
        half = max((max(values) - min(values)) / 2 + 0.5, MIN_ACCURACY_SPAN / 2)
        ax.set_ylim(max(middle - half, 0.0), min(middle + half, 100.5))
    ax.set_xlabel("file size (KiB)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"Size and accuracy of each TFLite file\n{subject}".strip(), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return save_figure(fig, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, class_names: list[str], path: Path,
                     subject: str = "") -> Path:
    """Counts of true class (rows) against predicted class (columns), with the class names."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = pyplot()
    n = len(class_names)
    side = min(max(6.0, 0.6 * n + 2.5), 30.0)
    fig, ax = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay.from_predictions(labels, predictions, labels=list(range(n)), display_labels=class_names,
                                            cmap="Blues", colorbar=False, ax=ax,
                                            xticks_rotation="vertical" if n > 6 else "horizontal",
                                            text_kw={"fontsize": 8 if n <= 20 else 5})
    ax.set_title(f"Confusion matrix of the float Keras model\n{subject}".strip(), fontsize=10)
    return save_figure(fig, path)


def row_verdict(row: dict) -> str:
    """PASS, FAIL or INCONCLUSIVE for one file's row (a `VerificationReport.to_dict()`, maybe amended)."""
    if row.get("failures"):
        return "FAIL"
    verdict = row.get("verdict")
    if verdict in ("PASS", "FAIL", "INCONCLUSIVE"):
        return verdict
    return "PASS" if row.get("passed") else "FAIL"


def worst_verdict(verdicts) -> str:
    """FAIL if any file failed, else INCONCLUSIVE if any was inconclusive, else PASS."""
    verdicts = list(verdicts)
    return next((worst for worst in ("FAIL", "INCONCLUSIVE") if worst in verdicts), "PASS")


def judged(rows: list[dict]) -> dict:
    """A report's verdict fields from its files' rows: verdict, passed, failures, inconclusive."""
    verdict = worst_verdict(row_verdict(row) for row in rows)
    return {"verdict": verdict, "passed": verdict == "PASS",
            "failures": [f"{shown_name(row)}: {failure}" for row in rows for failure in row.get("failures") or []],
            "inconclusive": [f"{shown_name(row)}: {row.get('verdict_reason') or 'too few images'}" for row in rows
                             if row_verdict(row) == "INCONCLUSIVE"]}


def android_verdict(summary: dict) -> dict | None:
    """{"verdict": ..., "verified_as": file name} from the row that verified the Android file: its own row, or
    that of the uint8 file it is a copy of (with metadata); None when no row did."""
    android = summary.get("deployables", {}).get("android")
    rows = summary.get("files", []) if android is not None else []
    own = [row for row in rows if shown_name(row) == android]  # an `export --android` after the pipeline
    for row in own or [row for row in rows if row["mode"] == "uint8" and shown_name(row) == "model_uint8.tflite"]:
        return {"verdict": row_verdict(row), "verified_as": shown_name(row)}
    return None


def _deployable_note(summary: dict, key: str) -> str:
    checked = summary.get("android_verdict", android_verdict(summary)) if key == "android" else None
    if checked is None:
        return ""
    android = summary["deployables"]["android"]
    whose = "" if checked["verified_as"] == android else f", as {checked['verified_as']} above"
    by = next((row["checked_by"] for row in summary["files"] if shown_name(row) == android and row.get("checked_by")),
              None)
    whose += f", written and checked by {by}" if by else ""
    return f" ({checked['verdict']}{whose}{': do not ship it' if checked['verdict'] == 'FAIL' else ''})"


def overall_verdict(summary: dict) -> str:
    """FAIL when a file failed, else INCONCLUSIVE when a file's verdict was, else the summary's own."""
    verdicts = [row_verdict(row) for row in summary.get("files", [])]
    if summary.get("verdict") == "FAIL" or "FAIL" in verdicts:
        return "FAIL"
    if "INCONCLUSIVE" in verdicts:
        return "INCONCLUSIVE"
    return summary.get("verdict", "PASS")


def _agreement(row: dict) -> str:
    text = f"{row['top1_agreement']:.2%}"
    interval = row.get("top1_agreement_interval")
    if interval:
        samples = row.get("samples", 0)
        text += (f" ({row.get('disagreements', round((1 - row['top1_agreement']) * samples))} of {samples} "
                 f"disagree; 95% {interval[0]:.1%}-{interval[1]:.1%})")
    return text


def _accuracy(row: dict) -> str:
    text = f"{row['tflite_accuracy']:.2%}" if row.get("tflite_accuracy") is not None else "-"
    interval = row.get("tflite_accuracy_interval")
    if interval:
        text += f" (95% {interval[0]:.1%}-{interval[1]:.1%})"
    return text


def _verdict_cell(row: dict) -> str:
    verdict = row_verdict(row)
    if verdict == "FAIL":
        return "FAIL: " + "; ".join(row.get("failures") or ["see the figures"])
    if verdict == "INCONCLUSIVE":
        reason = row.get("verdict_reason") or f"only {row.get('samples')} images"
        return f"INCONCLUSIVE: {reason}"
    return "PASS"


def _percent(value) -> str:
    return f"{value:.2%}" if _finite(value) else "not a number (the training diverged)"  # NaN, or null before


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _latency(row: dict) -> str:
    if not _finite(row.get("latency_ms")):  # NaN in memory, null in report.json: not timed
        return "not measured"
    p90 = row.get("latency_p90_ms")
    return f"{row['latency_ms']:.2f} ms" + (f" (p90 {p90:.2f})" if _finite(p90) else "")


def _sqnr(row: dict) -> str:
    value = row.get("sqnr_db")
    return "-" if value is None else f"{value:.1f} dB"  # inf: the float model's outputs to the bit


def markdown(summary: dict) -> str:
    """The human-readable report."""
    from tflite.verify import DYNAMIC_NOTE, MIN_VERDICT_IMAGES

    lines = [f"# mobilenet-keras run: {overall_verdict(summary)}", ""]
    data = summary["run"]["data"]
    config = summary["run"]["config"]
    lines += [f"Data: `{data['source']}`, {data['train_images']} training and {data['validation_images']} "
              f"validation images, {len(data['classes'])} classes, {data['image_size']} px. "
              f"Model: MobileNet V1 alpha {config['alpha']}, weights {config['weights'] or 'random init'}. "
              f"Float validation accuracy {_percent(summary['run']['final']['val_accuracy'])}.", ""]
    lines += ["| file | mode | size | compression | top-1 agreement | accuracy | SQNR | float / int16 ops | latency "
              "| verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["files"]:
        lines.append(f"| `{shown_name(row)}` | {row['mode']} | {row['size_bytes'] / 1024:,.0f} KiB | "
                     f"{1 / row['size_ratio']:.1f}x | {_agreement(row)} | {_accuracy(row)} | "
                     f"{_sqnr(row)} | {op_counts_cell(row)} | {_latency(row)} | {_verdict_cell(row)} |")
    lines += ["", f"Intervals are 95% Wilson score intervals; a verdict needs at least {MIN_VERDICT_IMAGES} "
              "validation images (fewer: INCONCLUSIVE, unless a figure fails for sure: top-5 overlap or SQNR "
              "below its threshold, or a top-1 agreement or accuracy drop whose interval lies past it). Float "
              "ops inside an integer file (a float prefix asked for with --float-layers) run on CPU and GPU "
              "delegates, not on integer-only accelerators."]
    if any(row["mode"] == "dynamic" for row in summary["files"]):
        lines += ["", f"Note: {DYNAMIC_NOTE}."]
    lines += ["", "Compression is relative to the float32 weights; latency is the median (and 90th percentile) "
              "at batch 1 with 2 threads, after at least 1 s of warm-up.", ""]
    qat_rows = [row for row in summary["files"] if "qat_keras_agreement" in row]
    if qat_rows:
        lines += ["## Quantization-aware training", "",
                  "A QAT file's figures above are against the QAT Keras model it was converted from (QAT "
                  "fine-tunes the weights, so that model is its reference); its accuracy drop is from the float "
                  "model." + _qat_settings_line(qat_rows[0].get("qat")) + _replaced_line(summary), "",
                  "| file | agreement with the QAT Keras model | agreement with the float model | float accuracy "
                  "| QAT Keras accuracy | file accuracy |", "|---|---|---|---|---|---|"]
        lines += [f"| `{shown_name(row)}` | {row['qat_keras_agreement']:.2%} "
                  f"| {row['float_model_agreement']:.2%} | {row['float_accuracy']:.2%} "
                  f"| {row['qat_keras_accuracy']:.2%} | {row['tflite_accuracy']:.2%} |"
                  for row in qat_rows]
        lines.append("")
    if summary.get("worst_layers"):
        lines += ["## Where int8 rounding costs most: the five worst layers", "",
                  "Measured by TFLite's quantization debugger on a plain int8 conversion of its own (float input and "
                  "output, calibrated on 100 training images, without the converter's equalization, rounding by "
                  "error or bias correction), over 20 of those images: where `--float-layers` or int16 activations "
                  "help most, not figures of the files above. A name that is not a layer's is the tensor's (the "
                  "model's output, for SOFTMAX).", "",
                  "| layer | op | RMSE / scale | max abs error |", "|---|---|---|---|"]
        for row in summary["worst_layers"]:
            lines.append(f"| `{row['layer']}` | {row['op']} | {row['rmse_over_scale']:.3f} | "
                         f"{row['max_abs_error']:.4f} |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in summary["plots"]] + [""]
    lines += ["## Deployable files", ""]
    lines += [f"- `{k}`: {v}{_deployable_note(summary, k)}" for k, v in summary["deployables"].items()] + [""]
    return "\n".join(lines)


def plot_subject(model_name: str, source: str, num_images: int) -> str:
    """The second title line of the report's plots."""
    return f"{model_name} on {source}: {num_images} validation images"


def replace_rows(summary: dict, rows: list[dict], out: Path, model, by: str = "qat") -> None:
    """Put `rows` (files checked after the pipeline, by `mobilenet-keras qat` or `export --android`) into a
    pipeline report in place of the rows of the same files (after the others when it had none), judge the run
    again from its rows, redraw the size plot and write report.md and report.json."""
    import time

    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if by != "qat":
        rows = [{**row, "checked_by": f"`mobilenet-keras {by}` at {stamp}"} for row in rows]
    new = {shown_name(row): row for row in rows}
    files = [new.pop(shown_name(row), row) for row in summary["files"]]
    files += list(new.values())
    summary.update(files=files, **judged(files))
    if by == "qat":
        summary["qat_rows_replaced"] = stamp
    summary["android_verdict"] = android_verdict(summary)
    if "size_vs_accuracy.png" in summary.get("plots", []):
        data = summary["run"]["data"]
        float_accuracy = next((r["float_accuracy"] for r in files if r.get("float_accuracy") is not None), None)
        size_accuracy(files, out / "size_vs_accuracy.png", float_accuracy=float_accuracy,
                      subject=plot_subject(model.name, data["source"], data["validation_images"]))
    write(summary, out)


def read_summary(run_dir: Path) -> dict | None:
    """report.json of a pipeline run as a dict (its non-finite figures as floats); None when there is none, or
    it is damaged."""
    from mobilenet_keras.files import read_json

    try:
        summary = read_json(run_dir / "report.json")
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("files"), list):
        return None
    if summary.get("file_paths") == FILE_PATHS:  # an older report.json's relative paths are from its cwd
        summary["files"] = files_from(summary["files"], run_dir)
    return summary


#: report.json's mark that its rows name the run's files from the run folder.
FILE_PATHS = "from the run folder"


def files_in(rows: list[dict], run_dir: Path) -> list[dict]:
    """`rows` as a run folder's JSON keeps them: a file inside the run folder by its path from there
    (`tflite/model_int8.tflite`), so that a run folder moved or copied elsewhere still names its own files."""
    here = Path(run_dir).absolute()
    out = []
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("file"), str):
            path = Path(row["file"]).absolute()  # a path typed relative is from the current folder
            row = {**row, "file": path.relative_to(here).as_posix() if path.is_relative_to(here) else str(path)}
        out.append(row)
    return out


def files_from(rows: list[dict], run_dir: Path) -> list[dict]:
    """The rows of a run folder's JSON with their files as paths again (a relative one is from the run folder)."""
    return [{**row, "file": str(Path(run_dir) / row["file"])}
            if isinstance(row, dict) and isinstance(row.get("file"), str) else row for row in rows]


def withdraw(run_dir: Path) -> None:
    """Remove the run's verdict (report.json first: without it the folder holds no finished report) before the
    files it judges change; `write` puts the new one."""
    for name in ("report.json", "report.md"):
        (run_dir / name).unlink(missing_ok=True)


def write(summary: dict, out: Path) -> None:
    """report.md, then report.json last: a run folder with report.json is a finished run."""
    write_bytes_atomic(out / "report.md", markdown(summary).encode())
    write_json_atomic(out / "report.json", {**summary, "files": files_in(summary["files"], out),
                                            "file_paths": FILE_PATHS})


def _qat_settings_line(settings: dict | None) -> str:
    """' QAT trained N epoch(s) at RATE on ...' for report.md; '' for a row written before settings were recorded."""
    if not settings:
        return ""
    from mobilenet_keras.app.qat_stage import QAT_TARGET_WORDS

    targets = QAT_TARGET_WORDS.get(settings["targets"], settings["targets"])
    return f" QAT trained {settings['epochs']} epoch(s) at {settings['learning_rate']:g} on {targets}."


def _replaced_line(summary: dict) -> str:
    when = summary.get("qat_rows_replaced")
    return f" Written by `mobilenet-keras qat` at {when}, after the pipeline's run." if when else ""
