"""The inference loop of a device: frames from a video file, a camera (through OpenCV, when installed) or a
directory of images (with `follow`, new files as they appear), each run through a Model, one JSON line per frame,
a summary line at the end or on Ctrl-C."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import EdgevitError
from runtime.evaluate import IMAGE_SUFFIXES
from runtime.model import Model

POLL_S = 0.2  # how often a followed directory is listed again


@dataclass(frozen=True)
class Frame:
    """One frame of a source: its number (from 0, in source order), the image (a path or a BGR array)."""

    number: int
    image: Any
    order: str = "rgb"
    name: str | None = None  # the file of a directory source


def directory_frames(folder: Path, follow: bool, poll_s: float = POLL_S) -> Iterator[Frame]:
    """The images of `folder` in name order; with `follow`, then every new file as it appears (until interrupted)."""
    seen: set[str] = set()
    number = 0
    while True:
        new = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in seen)
        for path in new:
            seen.add(path.name)
            yield Frame(number, path, name=path.name)
            number += 1
        if not follow:
            return
        if not new:
            time.sleep(poll_s)


def video_frames(source: str) -> Iterator[Frame]:
    """The frames of a video file or camera (an index such as 0, or a device path) as OpenCV decodes them (BGR)."""
    try:
        import cv2
    except ImportError:
        raise EdgevitError(f"reading {source} needs OpenCV (pip install opencv-python-headless); "
                           "a directory of images needs nothing") from None
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        raise EdgevitError(f"cannot open video or camera {source}")
    try:
        number = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield Frame(number, frame, order="bgr")
            number += 1
    finally:
        capture.release()


def open_source(source: str, follow: bool) -> Iterator[Frame]:
    """Frames of SOURCE: a directory of images, else a video file or camera."""
    path = Path(source)
    if path.is_dir():
        return directory_frames(path, follow)
    if follow:
        raise EdgevitError(f"--follow takes a directory of images, not {source}")
    if not source.isdigit() and not path.exists():
        raise EdgevitError(f"source not found: {source}")
    return video_frames(source)


def frame_record(model: Model, frame: Frame, k: int) -> dict:
    """Run one frame; its JSON record (top-k, or the embedding's size and norm; latency) or its error."""
    record: dict[str, Any] = {"frame": frame.number}
    if frame.name is not None:
        record["file"] = frame.name
    start = time.perf_counter()
    try:
        output = model.run(frame.image, order=frame.order)
    except EdgevitError as err:
        return {**record, "error": str(err)}
    latency_ms = (time.perf_counter() - start) * 1e3
    if model.is_classifier:
        record["top"] = [{"class": p.index, "label": p.label, "score": round(p.score, 6)} for p in model.top_k(k)]
    else:
        record.update(size=int(output.size), l2_norm=round(float(np.linalg.norm(output)), 6))
    return {**record, "latency_ms": round(latency_ms, 3)}


def stream(model: Model, frames: Iterator[Frame], *, every: int = 1, max_frames: int | None = None, k: int = 5,
           emit: Callable[[str], None] = print) -> dict:
    """Run every `every`-th frame (at most `max_frames`), emitting a JSON line each, until the source ends, the
    limit is reached or Ctrl-C; returns (and emits) the summary."""
    latencies, errors, read, stopped = [], 0, 0, "end"
    try:
        for frame in frames:
            read += 1
            if frame.number % every:
                continue
            record = frame_record(model, frame, k)
            errors += "error" in record
            if "latency_ms" in record:
                latencies.append(record["latency_ms"])
            emit(json.dumps(record))
            if max_frames is not None and len(latencies) + errors >= max_frames:
                stopped = "max-frames"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
    summary = {"frames_read": read, "frames_run": len(latencies), "errors": errors, "stopped": stopped,
               "median_latency_ms": round(float(np.median(latencies)), 3) if latencies else None,
               "mean_latency_ms": round(float(np.mean(latencies)), 3) if latencies else None}
    emit(json.dumps({"summary": summary}))
    return summary
