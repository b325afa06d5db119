"""The SavedModel, loaded by TensorFlow alone and by saved_model_cli, gives the Keras model's answers."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mobilenet_keras import MobileNetV1, preprocess_input
from mobilenet_keras.deploy.saved_model import export_saved_model
from mobilenet_keras.images import load_image
from tests.conftest import IMAGES, require

SIZE = 64
LABELS = [f"class_{i}" for i in range(7)]


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(3)
    return MobileNetV1(input_shape=(SIZE, SIZE, 3), alpha=0.25, classes=7)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return export_saved_model(model, tmp_path_factory.mktemp("export") / "model", labels=LABELS, top_k=3)


# Runs in a process that imports TensorFlow only, as a serving stack would.
LOADER = r"""
import base64, json, sys
import numpy as np, tensorflow as tf
folder, request_path, images_path, out_path = sys.argv[1:5]
loaded = tf.saved_model.load(folder)
pixels = np.load(images_path)
by_pixels = loaded.signatures["serving_default"](images=tf.constant(pixels))
request = json.load(open(request_path))
assert request["signature_name"] == "serving_bytes"
encoded = [base64.b64decode(instance["b64"]) for instance in request["instances"]]
by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
# the package's one decode and resize (mobilenet_keras.images.decode_and_resize), written out in TF alone
decoded = tf.stack([tf.clip_by_value(tf.round(tf.image.resize(
    tf.cast(tf.io.decode_image(e, channels=3, expand_animations=False), tf.float32),
    (pixels.shape[1], pixels.shape[2]), method="bilinear", antialias=True)), 0, 255) for e in encoded]).numpy()
np.savez(out_path, pixels_probs=by_pixels["probabilities"].numpy(), bytes_probs=by_bytes["probabilities"].numpy(),
         labels=by_pixels["top_k_labels"].numpy(), indices=by_pixels["top_k_indices"].numpy(), decoded=decoded)
print(sorted(by_pixels), sorted(by_bytes))
"""


def test_both_signatures_give_the_keras_probabilities(model, saved, tmp_path):
    photos = sorted(p for p in require(IMAGES).iterdir() if p.suffix.lower() in {".png", ".jpg", ".bmp"})
    from tests.conftest import resize_batch
    from PIL import Image

    pixels = resize_batch([np.asarray(Image.open(p).convert("RGB")) for p in photos], SIZE)
    np.save(tmp_path / "x.npy", pixels)
    request = {"signature_name": "serving_bytes",
               "instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in photos]}
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = subprocess.run([sys.executable, "-c", LOADER, str(saved), str(tmp_path / "request.json"),
                             str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "top_k_labels" in result.stdout
    out = np.load(tmp_path / "out.npz", allow_pickle=True)  # the labels are byte strings
    expected = model.predict(preprocess_input(pixels), verbose=0)
    np.testing.assert_allclose(out["pixels_probs"], expected, atol=1e-5)
    from_bytes = model.predict(preprocess_input(out["decoded"]), verbose=0)
    np.testing.assert_allclose(out["bytes_probs"], from_bytes, atol=1e-5)
    assert out["labels"].shape == (len(photos), 3)
    top = np.argsort(-expected, axis=1)[:, :3]
    np.testing.assert_array_equal(out["indices"], top)
    assert [label.decode() for label in out["labels"][0]] == [LABELS[i] for i in top[0]]


def _saved_model_cli():
    import shutil

    beside_python = __import__("pathlib").Path(sys.executable).with_name("saved_model_cli")
    return shutil.which("saved_model_cli") or str(beside_python)


def test_saved_model_cli_show_and_run(model, saved, tmp_path):
    show = subprocess.run([_saved_model_cli(), "show", "--dir", str(saved), "--all"], capture_output=True, text=True,
                          timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    for words in ("signature_def['serving_default']", "signature_def['serving_bytes']", "images", "image_bytes",
                  "probabilities", "top_k_labels"):
        assert words in show.stdout, words
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", pixels)
    run = subprocess.run([_saved_model_cli(), "run", "--dir", str(saved), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
                          "--outdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    probabilities = np.load(tmp_path / "out" / "probabilities.npy")
    np.testing.assert_allclose(probabilities, model.predict(preprocess_input(pixels), verbose=0), atol=1e-5)


def test_the_labels_travel_inside_the_folder_and_predict_names_the_classes(model, saved, tmp_path, capsys):
    from PIL import Image

    from mobilenet_keras.app.predict import print_top_classes
    from mobilenet_keras.deploy.saved_model import LABELS_FILE

    assert (saved / LABELS_FILE).read_text().splitlines() == LABELS
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(photo)
    print_top_classes(saved, [photo], top=3)  # no labels.txt beside the folder: the one inside it
    printed = [line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]]
    probabilities = model.predict(preprocess_input(load_image(photo, (SIZE, SIZE))[None]), verbose=0)[0]
    assert printed == [LABELS[i] for i in np.argsort(-probabilities)[:3]]


def test_refuses_to_overwrite_without_force(model, saved):
    with pytest.raises(ValueError, match="not empty"):
        export_saved_model(model, saved)
    assert export_saved_model(model, saved, force=True) == saved


def test_missing_parent_folders_are_created(model, tmp_path):
    target = tmp_path / "serving" / "mobilenet" / "1"  # TF Serving's layout
    assert export_saved_model(model, target) == target
    assert (target / "saved_model.pb").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["1"]  # no staging folder left beside it


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    """A small model's .keras file, for the exports run in processes of their own (to kill or race them)."""
    path = tmp_path_factory.mktemp("small") / "small.keras"
    MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, weights=None).save(path)
    return path


def test_a_killed_export_leaves_no_staging_folder_and_folders_follow_the_umask(tmp_path, small_file):
    """SIGKILL while the SavedModel is being written, then export again: the abandoned staging folder goes,
    and the finished folder is 0755 under umask 022 (readable by a TF Serving of another user)."""
    import signal
    import time

    script = (
        "import os, sys, keras; os.umask(0o022)\n"
        "from mobilenet_keras.deploy.saved_model import export_saved_model\n"
        f"model = keras.models.load_model({str(small_file)!r})\n"
        f"export_saved_model(model, {str(tmp_path / 'serving' / 'm' / '1')!r}, force=True)\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", script])
    parent = tmp_path / "serving" / "m"
    deadline = time.time() + 240
    staged = []
    while not staged and victim.poll() is None and time.time() < deadline:
        staged = list(parent.glob(".1.*.staging")) if parent.exists() else []
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    if not staged:
        pytest.skip("the export finished before a staging folder could be seen; nothing to kill")
    assert staged[0].exists()  # killed mid-write: the staging folder is left behind ...
    # the next exports in this process (no other import of TensorFlow), each under its umask
    import keras

    small = keras.models.load_model(small_file)

    def export_under(umask: int, target: Path) -> None:
        before = os.umask(umask)
        try:
            export_saved_model(small, target, force=True)
        finally:
            os.umask(before)

    export_under(0o022, parent / "1")
    assert not list(parent.glob(".1.*.staging"))  # ... and the next export removes it
    assert (parent / "1" / "saved_model.pb").is_file()
    assert (parent / "1").stat().st_mode & 0o777 == 0o755
    # under umask 002 (a group that shares the models) every folder and file TensorFlow made follows it too
    export_under(0o002, parent / "2")
    version = parent / "2"
    modes = {p.relative_to(version): p.stat().st_mode & 0o777 for p in [version, *version.rglob("*")]}
    assert modes[Path("variables")] == 0o775 and modes[Path("saved_model.pb")] == 0o664, modes
    assert all(mode == (0o775 if (version / p).is_dir() else 0o664) for p, mode in modes.items()), modes


def test_force_replaces_an_earlier_saved_model_and_nothing_else(model, saved, tmp_path, monkeypatch):
    """--force used to rmtree whatever the path held: a run folder, the current folder (`.`), a parent."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"weights")
    for target, problem in ((run, "not a SavedModel"), (run / "model.keras", "is a file"),
                            (tmp_path, "not a SavedModel")):
        with pytest.raises(ValueError, match=problem):
            export_saved_model(model, target, force=True)
    link = tmp_path / "link"
    link.symlink_to(saved, target_is_directory=True)
    with pytest.raises(ValueError, match="is a link"):
        export_saved_model(model, link, force=True)
    monkeypatch.chdir(run)
    with pytest.raises(ValueError, match="is or holds the current folder"):
        export_saved_model(model, ".", force=True)
    monkeypatch.chdir(saved / "variables")
    with pytest.raises(ValueError, match="holds the current folder"):
        export_saved_model(model, "..", force=True)
    assert (run / "model.keras").read_bytes() == b"weights" and (saved / "saved_model.pb").is_file()


def _export_script(model_file: Path, target: Path, force: bool) -> str:
    return ("import keras\n"
            "from mobilenet_keras.deploy.saved_model import export_saved_model\n"
            f"model = keras.models.load_model({str(model_file)!r})\n"
            f"export_saved_model(model, {str(target)!r}, force={force})\n")


def test_a_server_watching_the_folder_always_finds_a_whole_version(model, tmp_path, small_file):
    """--force replaces the version folder by swapping names in one step: it used to delete the old folder,
    then rename the new one in, so a server (or a kill) could find the version half deleted or missing."""
    import time

    version = tmp_path / "serving" / "m" / "1"
    export_saved_model(model, version)
    first = (version / "saved_model.pb").stat().st_ino
    writer = subprocess.Popen([sys.executable, "-c", _export_script(small_file, version, True)])
    looks, missing, deadline = 0, 0, time.time() + 300
    while writer.poll() is None and time.time() < deadline:
        looks += 1
        missing += not (version / "saved_model.pb").exists() or not (version / "variables").is_dir()
    assert writer.wait() == 0
    assert looks > 1000 and missing == 0, (looks, missing)
    assert (version / "saved_model.pb").stat().st_ino != first  # the new version is in place
    assert sorted(p.name for p in version.parent.iterdir()) == ["1"]  # and the old one is gone


def test_a_folder_filled_during_the_export_is_left_alone(tmp_path, small_file):
    """Without --force, what appeared in the folder while the SavedModel was written is not deleted (the
    final rename used to rmtree whatever was there): the export fails and the file stays."""
    import time

    version = tmp_path / "serving" / "1"
    version.mkdir(parents=True)  # an empty folder is accepted
    writer = subprocess.Popen([sys.executable, "-c", _export_script(small_file, version, False)],
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(version.parent.glob(".1.*.staging")) and writer.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    (version / "keep.txt").write_text("another export's file")
    _, stderr = writer.communicate(timeout=300)
    assert (version / "keep.txt").read_text() == "another export's file"
    if writer.returncode == 0:
        pytest.skip("the export finished before the folder could be filled")
    assert "ValueError" in stderr and "nothing there was replaced" in stderr, stderr[-1500:]
    assert not list(version.parent.glob(".1.*"))  # its staging folder went


def test_the_pixel_signature_refuses_images_of_another_shape(saved):
    """A rank-3 batch aborted the serving process inside oneDNN (no Python error); an image of another size
    was answered. In a process of its own, as a crash would take the test run down with it."""
    code = ("import tensorflow as tf\n"
            f"serve = tf.saved_model.load({str(saved)!r}).signatures['serving_default']\n"
            f"for shape in ([{SIZE}, {SIZE}, 3], [1, {SIZE + 1}, {SIZE}, 3]):\n"
            "    try:\n"
            "        serve(images=tf.zeros(shape))\n"
            "        print('ANSWERED', shape)\n"
            "    except tf.errors.InvalidArgumentError as error:\n"
            "        print('REFUSED', 'is not compatible with expected shape' in error.message)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["REFUSED", "True", "REFUSED", "True"], result.stdout


def test_an_empty_request_gets_empty_answers_from_both_signatures(saved):
    """A batch of 0 failed in both signatures ("Incompatible shapes: [0,32,32,3] vs. [8]" from the first
    BatchNorm: TensorFlow's CPU convolution passed the empty batch through with its input's shape)."""
    code = ("import tensorflow as tf\n"
            f"loaded = tf.saved_model.load({str(saved)!r})\n"
            f"for name, arg in (('serving_default', dict(images=tf.zeros([0, {SIZE}, {SIZE}, 3]))),\n"
            "                  ('serving_bytes', dict(image_bytes=tf.constant([], tf.string)))):\n"
            "    out = loaded.signatures[name](**arg)\n"
            "    print(name, *(f'{key}=' + 'x'.join(map(str, out[key].shape)) for key in sorted(out)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    by_pixels, by_bytes = (line.split()[1:] for line in result.stdout.splitlines())
    assert by_pixels == by_bytes and "probabilities=0x7" in by_pixels, result.stdout
    # (the top k is 3 with labels, 5 after the --force test replaced the folder: this file's tests share it)
    assert all(shape.split("=")[1].startswith("0x") for shape in by_pixels), result.stdout


def test_predict_names_a_saved_model_that_export_did_not_write(model, tmp_path):
    from mobilenet_keras.app.predict import print_top_classes

    photo = sorted(p for p in require(IMAGES).iterdir() if p.suffix.lower() in {".png", ".jpg"})[0]
    model.export(str(tmp_path / "plain"), verbose=False)  # Keras's own export: no serving_bytes
    with pytest.raises(ValueError, match="no serving_bytes signature"):
        print_top_classes(tmp_path / "plain", [photo])


def test_predict_names_a_damaged_saved_model_in_one_line(saved, tmp_path):
    # before: internal errors (IndexError "Read less bytes than requested", protobuf's "Wire format was corrupt",
    # exit 4) or TensorFlow's advice for other cases ("requires a tags= argument", "load on a different device")
    import shutil

    from mobilenet_keras.app.predict import print_top_classes

    photo = sorted(p for p in require(IMAGES).iterdir() if p.suffix.lower() in {".png", ".jpg"})[0]
    data = next((Path(saved) / "variables").glob("variables.data-*"))
    damage = {
        "empty_data": lambda f: (f / "variables" / data.name).write_bytes(b""),
        "cut_graph": lambda f: (f / "saved_model.pb").write_bytes((f / "saved_model.pb").read_bytes()[:3000]),
        "empty_graph": lambda f: (f / "saved_model.pb").write_bytes(b""),
        "no_variables": lambda f: shutil.rmtree(f / "variables"),
        "no_index": lambda f: (f / "variables" / "variables.index").unlink(),
        "garbage_index": lambda f: (f / "variables" / "variables.index").write_bytes(b"x" * 100),
        "cut_data": lambda f: (f / "variables" / data.name).write_bytes(data.read_bytes()[:5000]),
    }
    for name, spoil in damage.items():
        folder = tmp_path / name
        shutil.copytree(saved, folder)
        spoil(folder)
        with pytest.raises(ValueError) as info:
            print_top_classes(folder, [photo])
        message = str(info.value)
        assert message.startswith(f"{folder} is a") and ("damaged SavedModel" in message or "incomplete" in message) \
            and "export it again" in message and "\n" not in message, (name, message)


def test_without_an_atomic_exchange_the_old_version_is_set_aside_never_lost(model, tmp_path, monkeypatch):
    """Where renameat2's exchange is missing (another system or file system) the old version is renamed aside
    before the new one goes in: what a kill between the two renames leaves (the old version under
    .NAME.PID.XXXXXXXX.replaced, the version folder missing) is kept until a version is in place again."""
    import subprocess as sp

    from mobilenet_keras.deploy import saved_model

    version = tmp_path / "serving" / "1"
    export_saved_model(model, version)
    monkeypatch.setattr(saved_model, "exchange_folders", lambda first, second: False)
    export_saved_model(model, version, force=True)
    assert (version / "saved_model.pb").is_file()
    assert sorted(p.name for p in version.parent.iterdir()) == ["1"]
    gone = sp.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs: a killed exporter's
    aside = version.parent / f".1.{gone.pid}.0123abcd.replaced"
    version.rename(aside)  # as the kill left it: only the set-aside copy exists
    export_saved_model(model, tmp_path / "serving" / "2")  # another version's export leaves it alone
    export_saved_model(model, version)  # and so does this one's while no version was in place before it
    assert (aside / "saved_model.pb").is_file()
    export_saved_model(model, version, force=True)  # with a version in place, the old copy is an old one: swept
    assert sorted(p.name for p in version.parent.iterdir()) == ["1", "2"]


def test_the_current_folder_is_refused_even_empty(model, tmp_path, monkeypatch):
    """The rename would put the SavedModel in place of the shell's own folder (its files then out of sight)."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for target in (".", str(here)):
        with pytest.raises(ValueError, match="is or holds the current folder"):
            export_saved_model(model, target)


def test_what_export_saved_model_refuses_and_reads(model, tmp_path):
    """A labels.txt path was split into characters (ten of them for a 10-character path: no error), and a model
    ending in logits or features was exported with them as `probabilities`."""
    import keras

    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(model.output_shape[-1])))
    target = export_saved_model(model, tmp_path / "labels" / "1", labels=str(tmp_path / "labels.txt"))
    assert (target / "assets.extra" / "labels.txt").read_text() == (tmp_path / "labels.txt").read_text()
    logits = keras.Model(model.inputs, model.get_layer("predictions").input)  # the classifier before softmax
    features = MobileNetV1(input_shape=(SIZE, SIZE, 3), alpha=0.25, include_top=False)
    cases = [
        (lambda: export_saved_model(logits, tmp_path / "a" / "1"), ValueError, "not probabilities .*logits"),
        (lambda: export_saved_model(features, tmp_path / "b" / "1"), ValueError, "not class probabilities"),
        (lambda: export_saved_model(model, tmp_path / "c" / "1", top_k=0), ValueError, "top_k is how many"),
        (lambda: export_saved_model(model, tmp_path / "d" / "1", labels=[1, 2, 3]), TypeError, "class names"),
        (lambda: export_saved_model(None, tmp_path / "e" / "1"), TypeError, "takes a Keras model"),
        # a name with a line break shifted every later name in assets.extra/labels.txt (predict then named none)
        (lambda: export_saved_model(model, tmp_path / "f" / "1", labels=["air\nplane", *LABELS[2:], "x"]),
         ValueError, "class name 'air.*plane' can't be written one per line .*holds a line break"),
        (lambda: export_saved_model(model, tmp_path / "g" / "1", labels=[*LABELS[:-1], LABELS[0]]),
         ValueError, "not unique \\('class_0'\\); give one distinct class name per line"),
    ]
    for call, kind, words in cases:
        with pytest.raises(kind, match=words):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "labels.txt"]
    # a sigmoid's outputs are probabilities too, one per class (binary or multi-label)
    binary = MobileNetV1(input_shape=(SIZE, SIZE, 3), alpha=0.25, classes=1, classifier_activation="sigmoid")
    assert (export_saved_model(binary, tmp_path / "binary" / "1") / "saved_model.pb").is_file()
