"""python -m runtime stream: a 300-frame video written with OpenCV and a directory of its frames as PNGs give, frame
by frame, the labels `run` gives on the same decoded frames; --every / --max-frames; Ctrl-C ends with the summary."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, run_module

FRAMES = 300
REAL_IMAGES = ("ILSVRC2012_val_00000347.JPEG", "ILSVRC2012_val_00000355.JPEG", "ILSVRC2012_val_00011775.JPEG")


@pytest.fixture(scope="module")
def video(images_dir, tmp_path_factory):
    """A 300-frame MJPEG video panning over three real photos (100 frames each), and its frames as OpenCV decodes
    them, saved as PNGs (lossless: what `run` reads is exactly what the stream decoded)."""
    cv2 = pytest.importorskip("cv2")
    folder = tmp_path_factory.mktemp("stream")
    path = folder / "pan.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    for name in REAL_IMAGES:
        photo = cv2.imread(str(images_dir / name))
        for step in range(FRAMES // len(REAL_IMAGES)):
            x = step * (photo.shape[1] - 240) // 100
            writer.write(cv2.resize(photo[:, x:x + 240], (160, 120)))
    writer.release()
    frames = folder / "frames"
    frames.mkdir()
    capture = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        cv2.imwrite(str(frames / f"{count:04d}.png"), frame)
        count += 1
    capture.release()
    assert count == FRAMES
    return path, frames


def _lines(stdout: str) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in stdout.splitlines()]
    return records[:-1], records[-1]["summary"]


@pytest.fixture(scope="module")
def run_labels(int8_bundle, video) -> list[list[int]]:
    """The top-5 class indices `run` gives on each saved frame, in frame order."""
    frames = sorted(video[1].iterdir())
    result = run_module("runtime", "run", int8_bundle, *frames, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads(result.stdout.splitlines()[-1])
    return [[entry["class"] for entry in answers[str(frame)]] for frame in frames]


@pytest.mark.parametrize("source", ["video", "directory"])
def test_stream_equals_run_frame_by_frame(source, int8_bundle, video, run_labels):
    path = video[0] if source == "video" else video[1]
    result = run_module("runtime", "stream", int8_bundle, path)
    assert result.returncode == 0, result.stderr[-2000:]
    records, summary = _lines(result.stdout)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [[t["class"] for t in r["top"]] for r in records] == run_labels
    assert all(r["latency_ms"] > 0 for r in records)
    assert summary["frames_read"] == summary["frames_run"] == FRAMES and summary["stopped"] == "end"
    if source == "directory":
        assert [r["file"] for r in records] == [p.name for p in sorted(video[1].iterdir())]


def test_every_and_max_frames(int8_bundle, video, run_labels):
    result = run_module("runtime", "stream", int8_bundle, video[0], "--every", "7", "--max-frames", "10")
    assert result.returncode == 0, result.stderr[-2000:]
    records, summary = _lines(result.stdout)
    assert [r["frame"] for r in records] == list(range(0, 70, 7))
    assert [[t["class"] for t in r["top"]] for r in records] == run_labels[0:70:7]
    assert summary["frames_run"] == 10 and summary["stopped"] == "max-frames"


def test_ctrl_c_ends_with_the_summary(int8_bundle, video, tmp_path):
    """A followed directory never ends by itself: SIGINT after the first frames gives the summary line, exit 0; a
    file added while it runs is picked up."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    frames = sorted(video[1].iterdir())
    for frame in frames[:3]:
        (folder / frame.name).write_bytes(frame.read_bytes())
    process = subprocess.Popen([sys.executable, "-m", "runtime", "stream", str(int8_bundle), str(folder), "--follow"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = [json.loads(process.stdout.readline()) for _ in range(3)]
        (folder / "late.png").write_bytes(frames[3].read_bytes())
        seen.append(json.loads(process.stdout.readline()))
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-2000:]
    assert [r.get("file") for r in seen] == [f.name for f in frames[:3]] + ["late.png"]
    summary = json.loads(rest.splitlines()[-1])["summary"]
    assert summary["stopped"] == "interrupted" and summary["frames_run"] == 4 and "Traceback" not in err


def test_bad_sources_are_one_line(int8_bundle, tmp_path):
    from tests.helpers import assert_one_line_error

    assert_one_line_error(run_module("runtime", "stream", int8_bundle, tmp_path / "none.mp4"), "source not found")
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    assert_one_line_error(run_module("runtime", "stream", int8_bundle, tmp_path / "clip.mp4", "--follow"), "--follow")
    assert_one_line_error(run_module("runtime", "stream", int8_bundle, tmp_path, "--every", "0"), "--every")


def test_stream_of_a_features_bundle(int8_features_bundle, video):
    result = run_module("runtime", "stream", int8_features_bundle, video[1], "--max-frames", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    records, _ = _lines(result.stdout)
    assert [r["size"] for r in records] == [192, 192] and all(np.isfinite(r["l2_norm"]) for r in records)


def test_camera_example_classifies_and_draws(int8_bundle, video, run_labels, tmp_path):
    """examples/camera.py on the video (as it would on a camera): the top label of each frame, drawn onto it."""
    out = tmp_path / "frame_{}.png"
    result = subprocess.run([sys.executable, REPO / "examples" / "camera.py", int8_bundle, video[0], "--out", out,
                             "--max-frames", "5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    labels = [line.split(" ", 1)[1].rsplit(" ", 1)[0] for line in result.stdout.splitlines()]
    from runtime.model import Model

    with Model(int8_bundle) as model:
        assert labels == [model.labels[top[0]] for top in run_labels[:5]]
    import cv2

    drawn, source = cv2.imread(str(tmp_path / "frame_0.png")), cv2.imread(str(sorted(video[1].iterdir())[0]))
    assert drawn.shape == source.shape and not np.array_equal(drawn[:28], source[:28])
