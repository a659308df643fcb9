"""edgevit against its real alternatives: latency, peak memory and accuracy, in one run on one machine, on its
CPU (`device` cpu) or its GPU (cuda: edgevit's CUDA bundles against PyTorch CUDA, ONNX Runtime CUDA, TensorRT).

Phases: prepare every contender from the same model and weights (peers: results.peers.prepare; edgevit:
bundles given or compiled), load them all into this process, time them interleaved (each takes
its turn in every round, in a new random order, so a noisy, shared machine slows them alike),
score each on the evaluation split from its own outputs, then measure each one's peak RSS alone
in a fresh process.
"""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from results.model_weights import RANDOM_INIT_NOTE
from results.peers.prepare import Unavailable
from results.peers.runners import Artifact
from runtime.versions import versions

VERSIONED = ("torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "apache-tvm", "executorch", "torchao",
             "litert-torch", "ai-edge-litert", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "numpy")


SETTLE_S = 0.05  # pause before each contender's turn: spinning pools of the previous one go to sleep

@dataclass(frozen=True)
class BenchArgs:
    model: str
    bundles: tuple[Path, ...]  # edgevit bundles to include as they are
    edgevit_modes: tuple[str, ...]  # ... and bundles to compile here: each mode with each ToMe r
    tome_r: tuple[int, ...]
    peers: tuple[str, ...]  # names in results.peers.prepare.DEVICE_PEERS[device]
    threads: int
    rounds: int
    eval_limit: int | None
    calib_count: int
    memory_runs: int  # runs in each fresh-process peak-RSS probe; 0 skips the probes
    build_dir: Path
    spin_wait: bool  # thread pools spin between operators (ORT option; TVM / OpenMP: env set by the caller)
    device: str = "cpu"  # cpu | cuda: where every contender runs
    target: str = "host"  # the preset edgevit's bundles are compiled for (a CUDA one on cuda)


def run_bench(args: BenchArgs, console) -> list[dict]:
    """One record per contender (unavailable ones included, with their reason)."""
    from rich.progress import Progress

    from compile.data import CALIBRATION_ROWS, evaluation_rows, labelled_images
    from results.model_weights import model_weights
    from results.peers.native import has_runner, native_record
    from results.peers.peak_memory import measure_peak_rss
    from results.peers.runners import load_runner
    from results.scoring import top5_predictions
    from results.timing import PER_ROUND, interleaved_latency_ms

    rows = evaluation_rows(args.eval_limit)  # a bad labels file fails before anything is prepared
    weights = model_weights(args.model, args.build_dir)
    if weights.random_init:
        console.print(f"{args.model}: no stored weights, every contender loads one random init ({weights.path}); "
                      "latency only, no accuracy")
        rows = []
    contenders = _prepare(args, weights.path, console)
    artifacts = [c for c in contenders if isinstance(c, Artifact)]
    runners = {a.name: load_runner(a, args.threads, args.spin_wait) for a in artifacts}

    labels = np.array([label for _, label in rows])
    inputs = {name: r.example() for name, r in runners.items()}
    memory: dict[str, dict] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("latency (interleaved)", total=args.rounds)
        latency = interleaved_latency_ms({n: (lambda r=r, x=inputs[n]: r.run(x)) for n, r in runners.items()},
                                         rounds=args.rounds, progress=lambda: progress.advance(task), shuffle_seed=0,
                                         settle_s=SETTLE_S if args.spin_wait else 0.0)
        task = progress.add_task("evaluate", total=len(rows))
        top5 = top5_predictions({n: (r.run, r.preprocess) for n, r in runners.items()}, labelled_images() / "images",
                                rows, lambda: progress.advance(task))
        if args.memory_runs:
            task = progress.add_task("peak RSS (fresh process each)", total=len(artifacts))
            for artifact in artifacts:
                memory[artifact.name] = measure_peak_rss(artifact.to_json(), runners[artifact.name].preprocess,
                                                         args.threads, args.memory_runs,
                                                         args.spin_wait)
                progress.advance(task)
        native_bundles = [a for a in artifacts if has_runner(a)]
        task = progress.add_task("native runners (own process each)", total=len(native_bundles))
        natives = {}
        for artifact in native_bundles:
            natives[artifact.name] = native_record(
                artifact, threads=args.threads, runs=args.rounds * PER_ROUND, images=labelled_images() / "images",
                labels_csv=labelled_images() / "labels.csv", rows=None if weights.random_init else
                (CALIBRATION_ROWS, args.eval_limit))
            progress.advance(task)
    return _records(args, contenders, latency, top5, labels, memory, weights.random_init, natives)


def _prepare(args: BenchArgs, weights: Path, console) -> list[Artifact | Unavailable]:
    """Peers first, then edgevit bundles compiled here, then the bundles given; names made unique."""
    from results.peers.edgevit_contenders import build_bundles, bundle_artifact
    from results.peers.prepare import PeerContext, prepare_peer

    ctx = PeerContext(args.model, args.build_dir / "peers", args.calib_count, weights)
    contenders: list[Artifact | Unavailable] = []
    for name in args.peers:
        with console.status(f"preparing {name}"):
            contenders.append(prepare_peer(name, ctx))
        console.print(f"{name}: " + (f"not available: {contenders[-1].reason}"
                                     if isinstance(contenders[-1], Unavailable) else "ready"))
    contenders += build_bundles(args.model, args.edgevit_modes, args.tome_r, args.build_dir / "edgevit",
                                args.calib_count, console.print, weights, args.target)
    contenders += [bundle_artifact(path, args.model) for path in args.bundles]
    return _unique_names(contenders)


def _unique_names(contenders: list[Artifact | Unavailable]) -> list[Artifact | Unavailable]:
    """Two bundles of the same mode and r keep both, told apart by their folder names."""
    from dataclasses import replace

    names = [c.name for c in contenders]
    return [replace(c, name=f"{c.name} ({c.path.name})") if names.count(c.name) > 1 and isinstance(c, Artifact) else c
            for c in contenders]


def _records(args: BenchArgs, contenders, latency, top5, labels, memory, random_init: bool,
             natives: dict[str, dict]) -> list[dict]:
    """One record per contender; an edgevit bundle with a native runner is followed by the runner's record."""
    from compile.data import CALIBRATION_ROWS
    from results.peers.native import KIND
    from runtime.bench import machine_facts
    from runtime.evaluate import accuracy

    facts = machine_facts()
    common = {"model": args.model, "device": args.device, "batch": 1, "threads": args.threads,
              "spin_wait": args.spin_wait, "cpu": facts["cpu"], "machine": platform.machine(), "hostname": facts["hostname"],
              "n_images": len(labels), "split": f"labels.csv rows {CALIBRATION_ROWS + 1}..",
              "weights": RANDOM_INIT_NOTE if random_init else "stored", "random_init": random_init,
              "versions": _versions(), "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if args.device == "cuda":
        from results.peers.cuda_device import gpu_facts

        common |= {"gpu_facts": gpu_facts(), "edgevit_target": args.target}
    records = []
    for c in contenders:
        if isinstance(c, Unavailable):
            records.append({"contender": c.name, "status": "unavailable", "reason": c.reason, **common})
            continue
        top1, top5_rate = (None, None) if random_init else accuracy(top5[c.name], labels)
        records.append({"contender": c.name, "status": "ok", "runtime": c.kind, "recipe": c.recipe, **latency[c.name],
                        **memory.get(c.name, {}), "top1": top1, "top5": top5_rate, **common})
        if c.name in natives:
            native = natives[c.name]
            name = f"{c.name}-native"
            if native["status"] != "ok":
                records.append({"contender": name, "status": "unavailable", "reason": native["reason"], **common})
            else:
                records.append({"contender": name, "runtime": KIND, "recipe": c.recipe, "top1": None, "top5": None,
                                **native, **common})
    return _with_speedups(records)


def _with_speedups(records: list[dict]) -> list[dict]:
    """Add speed-ups (median latency ratios) vs each baseline of the device (results.peers.table.BASELINES: on the
    CPU ONNX Runtime FP32 and its fastest INT8 recipe, on cuda ONNX Runtime CUDA FP32 and the fastest TensorRT);
    a baseline picked as the fastest of several is named in the record too."""
    from results.peers.table import baselines

    for baseline, picked in baselines(records):
        for r in records:
            if r["status"] == "ok":
                r[f"speedup_vs_{baseline.key}"] = picked["median_ms"] / r["median_ms"]
                if baseline.fastest_of_several:
                    r[baseline.key] = picked["contender"]
    return records


def _versions() -> dict[str, str]:
    """Versions of every runtime and converter involved that is installed."""
    return versions(**{name: name for name in VERSIONED})
