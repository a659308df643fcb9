"""python -m runtime {run,eval,bench,stream}: the on-device commands (see DESIGN.md, command-line contract), on the
bundle's native core through the binding (runtime.Model): numpy is all a board needs."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

from runtime.errors import run_cli
from runtime.options import anywhere


def _session_options(parser: argparse.ArgumentParser) -> None:
    """--threads, --json, --trusted-keys and --max-pixels, taken before the command or after it (runtime.options)."""
    parser.add_argument("--threads", type=int, help="TVM worker threads (default: every CPU this process may use)")
    parser.add_argument("--json", action="store_true", help="also print a JSON object as the last line")
    parser.add_argument("--trusted-keys", type=Path, metavar="FILE",
                        help="refuse bundles not signed by a key of FILE ('.pub' lines; default: $EDGEVIT_TRUSTED_KEYS, "
                             "else /etc/edgevit/trusted_keys when it exists)")
    parser.add_argument("--max-pixels", type=int, metavar="N",
                        help="refuse image files of more pixels, read from their header (default 100000000)")


def _parser() -> argparse.ArgumentParser:
    before, after = anywhere(_session_options, {"threads": None, "json": False, "trusted_keys": None, "max_pixels": None})
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__, parents=[before])
    sub = parser.add_subparsers(dest="command", required=True)
    command = functools.partial(sub.add_parser, parents=[after])
    run = command("run", help="top-5 labels with scores for each image (a features bundle: the embedding's size and norm)")
    run.add_argument("bundle", type=Path)
    run.add_argument("images", type=Path, nargs="+")
    run.add_argument("--save", type=Path, default=None, metavar="FILE.npy",
                     help="write the outputs (embeddings, or logits) as .npy: [D] for one image, [n, D] for several, "
                          "in the order given")
    ev = command("eval", help="top-1 / top-5 accuracy over a labelled folder (a classifier bundle)")
    ev.add_argument("bundle", type=Path)
    ev.add_argument("--images", type=Path, required=True,
                    help="folder of images; without --labels, one sub-folder per class, named as in the bundle's labels.txt")
    ev.add_argument("--labels", type=Path, default=None,
                    help="CSV with columns file,label (paths relative to --images); default: the sub-folder layout")
    ev.add_argument("--skip", type=int, default=0, help="skip the first N rows (e.g. the calibration split)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate at most N rows")
    bench = command("bench", help="batch-1 latency statistics and peak RSS")
    bench.add_argument("bundle", type=Path)
    bench.add_argument("--warmup", type=int, default=10)
    bench.add_argument("--repeat", type=int, default=50)
    stream = command("stream", help="a JSON line per frame of a video, camera (OpenCV) or directory of images")
    stream.add_argument("bundle", type=Path)
    stream.add_argument("source", help="video file, camera (0, /dev/video0) or directory of images")
    stream.add_argument("--follow", action="store_true", help="directory: keep running new files as they appear")
    stream.add_argument("--every", type=int, default=1, metavar="N", help="run every N-th frame")
    stream.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames run")
    return parser


def _open_model(args):
    """Verify and load the bundle through its core. TVM's default is the number of *physical* cores (1 on a 2-vCPU VM
    with SMT siblings), so the default here is every CPU this process may run on (the core's 0), as ONNX Runtime and
    PyTorch use."""
    from runtime.errors import EdgevitError
    from runtime.model import Model

    if args.threads is not None and args.threads < 1:
        raise EdgevitError(f"--threads must be at least 1, got {args.threads}")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise EdgevitError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    model = Model(args.bundle, args.threads or 0, trusted_keys=args.trusted_keys)
    model.core.set_image_limits(max_pixels=args.max_pixels or 0)
    return model


def _threads(args) -> int:
    return len(os.sched_getaffinity(0)) if args.threads is None else args.threads


def cmd_run(args) -> None:
    import numpy as np

    if args.save is not None and not args.save.parent.is_dir():
        from runtime.errors import EdgevitError

        raise EdgevitError(f"--save {args.save}: folder {args.save.parent} does not exist")
    model = _open_model(args)
    results, outputs = {}, []
    for image in args.images:
        out = model.run(image)
        outputs.append(out)
        if not model.is_classifier:
            norm = float(np.linalg.norm(out))
            results[str(image)] = {"size": int(out.size), "l2_norm": round(norm, 6)}
            print(f"{image}: embedding of {out.size} values, L2 norm {norm:.4f}")
            continue
        best = model.top_k(5)
        results[str(image)] = [{"class": p.index, "label": p.label, "score": round(p.score, 6)} for p in best]
        print(f"{image}:")
        for rank, p in enumerate(best, 1):
            print(f"  {rank}. {p.label} ({p.index}) {p.score:.4f}")
    if args.save is not None:
        _save_npy(args.save, outputs[0] if len(outputs) == 1 else np.stack(outputs))
    if args.json:
        print(json.dumps(results))


def _save_npy(path: Path, array) -> None:
    """np.save into a temp file beside `path`, renamed over it last: a reader never sees half a file."""
    import tempfile

    import numpy as np

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cmd_eval(args) -> None:
    from runtime.errors import EdgevitError
    from runtime.evaluate import evaluate, read_class_folders, read_labels

    if args.labels is not None:
        rows = read_labels(args.labels, skip=args.skip, limit=args.limit)
    model = _open_model(args)
    if not model.is_classifier:
        raise EdgevitError(f"eval needs a classifier; {args.bundle} is a --output features bundle (use run --save)")
    if args.labels is None:
        rows = read_class_folders(args.images, model.labels, skip=args.skip, limit=args.limit)
    result = evaluate(model, args.images, rows, progress=_progress(len(rows)))
    print(f"top-1 {result.top1 * 100:.2f}%  top-5 {result.top5 * 100:.2f}%  n={result.n}")
    if args.json:
        print(json.dumps(result.summary()))


def _progress(total: int):
    """A small stderr progress counter (the runtime carries no progress-bar dependency)."""
    state = {"done": 0}
    interactive = sys.stderr.isatty()

    def step() -> None:
        state["done"] += 1
        done = state["done"]
        if interactive and (done % 20 == 0 or done == total):
            print(f"\r{done}/{total} images", end="\n" if done == total else "", file=sys.stderr, flush=True)

    return step


def cmd_bench(args) -> None:
    from runtime.bench import machine_facts, mapped_tvm_libraries

    model = _open_model(args)
    result = model.bench(warmup=args.warmup, repeat=args.repeat)
    threads = _threads(args)
    print(
        f"median {result.median_ms:.2f} ms  p90 {result.p90_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
        f"mean {result.mean_ms:.2f} ms  n={result.n}  threads={threads}  peak RSS {result.peak_rss_mb:.1f} MB"
    )
    if args.json:
        info = model.info
        record = {
            **result.to_dict(), "threads": threads, "model": info["model"], "target": info["target"],
            "quant": info["quant"], "tome": info["tome_schedule"], "edgevit_version": info["edgevit_version"],
            "tvm_version": info["tvm_version"], "runtime": "python", "tvm_libraries": mapped_tvm_libraries(),
            **machine_facts(),
        }
        print(json.dumps(record))


def cmd_stream(args) -> None:
    from runtime.errors import EdgevitError
    from runtime.stream import open_source, stream

    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise EdgevitError("--every and --max-frames must be at least 1")
    model = _open_model(args)
    stream(model, open_source(args.source, args.follow), every=args.every, max_frames=args.max_frames,
           emit=functools.partial(print, flush=True))


def main() -> None:
    args = _parser().parse_args()
    if args.command in ("bench",) and (args.warmup < 0 or args.repeat < 1):
        from runtime.errors import EdgevitError

        raise EdgevitError("--warmup must be >= 0 and --repeat >= 1")
    {"run": cmd_run, "eval": cmd_eval, "bench": cmd_bench, "stream": cmd_stream}[args.command](args)


if __name__ == "__main__":
    run_cli(main)
