"""python -m runtime {run,eval,bench}: the on-device commands (see DESIGN.md, command-line contract)."""

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
    """--threads and --json, taken before the command or after it (runtime.options)."""
    parser.add_argument("--threads", type=int, help="TVM worker threads (default: every CPU this process may use)")
    parser.add_argument("--json", action="store_true", help="also print a JSON object as the last line")


def _parser() -> argparse.ArgumentParser:
    before, after = anywhere(_session_options, {"threads": None, "json": False})
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
    return parser


def _open_session(args):
    """Set the thread count before TVM starts its pool, then verify and load the bundle.

    TVM's default is the number of *physical* cores (1 on a 2-vCPU VM with SMT siblings), so the
    default here is every CPU this process may run on, as ONNX Runtime and PyTorch use.
    """
    threads = len(os.sched_getaffinity(0)) if args.threads is None else args.threads
    if threads < 1:
        from runtime.errors import EdgevitError

        raise EdgevitError(f"--threads must be at least 1, got {threads}")
    os.environ["TVM_NUM_THREADS"] = str(threads)
    from runtime.bundle import open_bundle
    from runtime.session import InferenceSession

    return InferenceSession(open_bundle(args.bundle))


def _versions() -> dict:
    from runtime.versions import versions

    return {f"{key}_version": value for key, value in versions(tvm="apache-tvm").items()}


def cmd_run(args) -> None:
    import numpy as np

    from runtime.preprocess import Preprocess
    from runtime.session import top_k

    if args.save is not None and not args.save.parent.is_dir():
        from runtime.errors import EdgevitError

        raise EdgevitError(f"--save {args.save}: folder {args.save.parent} does not exist")
    session = _open_session(args)
    features = session.bundle.manifest.model.output == "features"
    labels = session.bundle.labels()
    preprocess = Preprocess.from_manifest(session.bundle.manifest.input)
    batch = session.new_batch()
    results, outputs = {}, []
    for image in args.images:
        preprocess.load(image, out=batch[0])
        out = session.run(batch)[0]
        outputs.append(out)
        if features:
            norm = float(np.linalg.norm(out))
            results[str(image)] = {"size": int(out.size), "l2_norm": round(norm, 6)}
            print(f"{image}: embedding of {out.size} values, L2 norm {norm:.4f}")
            continue
        best = top_k(out)
        results[str(image)] = [{"class": c, "label": labels[c], "score": round(s, 6)} for c, s in best]
        print(f"{image}:")
        for rank, (c, s) in enumerate(best, 1):
            print(f"  {rank}. {labels[c]} ({c}) {s:.4f}")
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

    session = _open_session(args)
    if session.bundle.manifest.model.output != "logits":
        raise EdgevitError(f"eval needs a classifier; {args.bundle} is a --output features bundle (use run --save)")
    if args.labels is not None:
        rows = read_labels(args.labels, skip=args.skip, limit=args.limit)
    else:
        rows = read_class_folders(args.images, session.bundle.labels(), skip=args.skip, limit=args.limit)
    result = evaluate(session, args.images, rows, progress=_progress(len(rows)))
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
    from runtime.bench import bench, machine_facts, mapped_tvm_libraries

    session = _open_session(args)
    result = bench(session, warmup=args.warmup, repeat=args.repeat, threads=int(os.environ["TVM_NUM_THREADS"]))
    print(
        f"median {result.median_ms:.2f} ms  p90 {result.p90_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
        f"mean {result.mean_ms:.2f} ms  n={result.n}  threads={result.threads}  peak RSS {result.peak_rss_mb:.1f} MB"
    )
    if args.json:
        manifest = session.bundle.manifest
        record = {
            **result.to_dict(),
            "model": manifest.model.name,
            "target": manifest.target.preset,
            "quant": manifest.quant.mode,
            "tome": manifest.tome.schedule,
            **_versions(),
            "runtime": "python",
            "tvm_libraries": mapped_tvm_libraries(),
            **machine_facts(),
        }
        print(json.dumps(record))


def main() -> None:
    args = _parser().parse_args()
    if args.command in ("bench",) and (args.warmup < 0 or args.repeat < 1):
        from runtime.errors import EdgevitError

        raise EdgevitError("--warmup must be >= 0 and --repeat >= 1")
    {"run": cmd_run, "eval": cmd_eval, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    from runtime.as_on_a_board import load_as_on_a_board

    load_as_on_a_board()  # before anything imports TVM: its runtime library only, and no torch
    run_cli(main)
