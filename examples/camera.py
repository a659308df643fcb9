"""A camera classifier on the edgevit binding: OpenCV captures, the bundle classifies, the top label is drawn on the
frame. On a board: `pip`-free, Debian's python3-numpy and python3-opencv are all it needs besides the bundle.

    python3 examples/camera.py BUNDLE [SOURCE] [--out FILE] [--max-frames N]

SOURCE: a camera index (default 0), a device path or a video file. With --out the annotated frames go to FILE (a
video, or one image per frame when FILE has an image suffix and a {} for the frame number); without it, to a window.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the runtime package beside examples/

import cv2  # noqa: E402

import runtime  # noqa: E402


def annotate(frame, text: str) -> None:
    """The label on a dark band across the top of the frame, in place."""
    cv2.rectangle(frame, (0, 0), (frame.shape[1], 28), (0, 0, 0), -1)
    cv2.putText(frame, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("source", nargs="?", default="0")
    parser.add_argument("--out", default=None)
    parser.add_argument("--max-frames", type=int, default=None)
    args = parser.parse_args()
    capture = cv2.VideoCapture(int(args.source) if args.source.isdigit() else args.source)
    writer = None
    with runtime.Model(args.bundle) as model:
        count = 0
        while args.max_frames is None or count < args.max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            start = time.perf_counter()
            best = model.classify(frame, k=1, order="bgr")[0]  # the frame as OpenCV holds it: BGR, no copy
            annotate(frame, f"{best.label} {best.score:.2f}  {(time.perf_counter() - start) * 1e3:.0f} ms")
            if args.out is None:
                cv2.imshow("edgevit", frame)
                if cv2.waitKey(1) == 27:  # Esc
                    break
            elif "{}" in args.out:
                cv2.imwrite(args.out.format(count), frame)
            else:
                if writer is None:
                    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"MJPG"), 15, frame.shape[1::-1])
                writer.write(frame)
            print(f"{count} {best.label} {best.score:.4f}", flush=True)
            count += 1
    capture.release()
    if writer is not None:
        writer.release()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except runtime.EdgevitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
