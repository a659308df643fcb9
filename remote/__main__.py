"""python -m remote {status,deploy,bench,tracker,rpc-bench,keygen}: the board farm over SSH and TVM RPC
(inventory: ./farm.toml), and the keys that sign bundles."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from runtime.bundle import RUNTIMES
from runtime.errors import EdgevitError, run_cli
from runtime.options import anywhere
from runtime.tracker import Tracker


def _common_options(parser: argparse.ArgumentParser) -> None:
    """--inventory and --trust-new, taken before the command or after it (runtime.options)."""
    parser.add_argument("--inventory", type=Path)
    parser.add_argument("--trust-new", action="store_true", help="record host keys of boards not in known_hosts yet")


def _parser() -> argparse.ArgumentParser:
    before, after = anywhere(_common_options, {"inventory": Path("farm.toml"), "trust_new": False})
    parser = argparse.ArgumentParser(prog="python -m remote", description=__doc__, parents=[before])
    sub = parser.add_subparsers(dest="command", required=True)
    command = functools.partial(sub.add_parser, parents=[after])
    status = command("status", help="reachability, arch, CPU features, runtime version, free disk")
    deploy = command("deploy", help="copy the runtime (and a bundle) to boards")
    bench = command("bench", help="deploy a bundle and benchmark it on boards in parallel")
    for p in (status, deploy, bench):
        p.add_argument("--boards", default="", help="comma list of board names (default: all)")
    deploy.add_argument("bundle", type=Path, nargs="?")
    for p in (deploy, bench):
        p.add_argument("--runtime", choices=RUNTIMES, default="native",
                       help="native: the bundle's bin/edgevit-run, no Python on the board (default); "
                            "python: python -m runtime with numpy, pillow and TVM installed there")
    bench.add_argument("bundle", type=Path)
    bench.add_argument("--results", type=Path, default=Path("results/farm.jsonl"))
    bench.add_argument("--warmup", type=int, default=5)
    bench.add_argument("--repeat", type=int, default=20)
    bench.add_argument("--threads", type=int, default=None)
    bench.add_argument("--images", type=Path, nargs="*", default=[], help="also record each board's top-5 on these")
    bench.add_argument("--timeout", type=float, default=900.0, help="seconds per board and attempt")
    bench.add_argument("--attempts", type=int, default=2)
    bench.add_argument("--resume", action="store_true", help="skip boards that already measured this bundle")
    bench.add_argument("--parallel", type=int, default=8, metavar="N", help="boards benchmarked at once (default 8)")
    tracker = command("tracker", help="run a TVM RPC tracker (boards register their rpc_key with it)")
    tracker.add_argument("--host", default="0.0.0.0")
    tracker.add_argument("--port", type=int, default=Tracker().port)
    rpc_bench = command("rpc-bench", help="time a bundle on a board through the RPC tracker")
    rpc_bench.add_argument("bundle", type=Path)
    rpc_bench.add_argument("--key", required=True, help="the board's RPC key (rpc_key in farm.toml)")
    rpc_bench.add_argument("--tracker", default=str(Tracker()), help="HOST:PORT")
    rpc_bench.add_argument("--repeat", type=int, default=10)
    keygen = command("keygen", help="write a key pair that signs bundles: FILE (private) and FILE.pub")
    keygen.add_argument("file", type=Path)
    keygen.add_argument("--name", default=None, help="the key's name in messages (default: FILE's name)")
    return parser


def cmd_keygen(args) -> int:
    from runtime.signing import generate_key

    key = generate_key(args.file, args.name)
    print(f"{args.file}: private key {key} (keep it secret; python -m compile ... --sign {args.file})")
    print(f"{args.file}.pub: {key.line()}")
    return 0


def cmd_tracker(args) -> int:
    import subprocess

    from remote.rpc import tracker_command

    return subprocess.call(tracker_command(Tracker(args.host, args.port)))


def cmd_rpc_bench(args) -> int:
    from remote.rpc import rpc_bench

    print(json.dumps(rpc_bench(Tracker.parse(args.tracker), args.key, args.bundle, repeat=args.repeat)))
    return 0


def _boards(args):
    from remote.inventory import load_inventory, select

    return select(load_inventory(args.inventory), [n for n in args.boards.split(",") if n])


def cmd_status(args) -> int:
    from remote.status import board_status

    rows = [board_status(b, trust_new=args.trust_new) for b in _boards(args)]
    for row in rows:
        if row["reachable"]:
            power = ""
            if "power_sampler" in row:
                reading = f"{row['power_w']:.2f} W" if row["power_readable"] else "UNREADABLE"
                power = f"  power {row['power_sampler']}: {reading}"
            print(f"{row['board']:<16} up    {row['arch']:<8} runtimes {','.join(row['runtimes']) or 'none':<14} "
                  f"python runtime {row.get('runtime') or 'absent':<8} numpy {row.get('numpy') or 'absent':<8} "
                  f"free {row['free_disk_mb']:.0f} MB  features {','.join(row.get('features', [])) or '?'}{power}")
        else:
            print(f"{row['board']:<16} DOWN  {row['error']}")
    print(json.dumps(rows))
    return 0 if all(r["reachable"] for r in rows) else 1


def cmd_deploy(args) -> int:
    from remote.deploy import deploy, needs_python
    from remote.ssh import BoardConnection
    from runtime.bundle import verified_manifest

    if args.bundle is not None:
        verified_manifest(args.bundle)  # refuse a corrupt bundle before copying it anywhere
    needs_python(args.bundle, args.runtime)
    failed = 0
    for board in _boards(args):
        try:
            with BoardConnection(board, trust_new=args.trust_new) as conn:
                result = deploy(conn, args.bundle, args.runtime)
            print(f"{board.name}: {len(result.uploaded)} uploaded, {len(result.unchanged)} unchanged")
        except EdgevitError as err:
            failed += 1
            print(f"{board.name}: FAILED {err}")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from rich.console import Console

    from remote.bench import BenchPlan, bench_farm, sigterm_as_interrupt
    from remote.deploy import needs_python
    from remote.progress import LiveProgress
    from runtime.bundle import verified_manifest

    verified_manifest(args.bundle)
    needs_python(args.bundle, args.runtime)
    if args.attempts < 1 or args.repeat < 1 or args.timeout <= 0 or args.parallel < 1:
        raise EdgevitError("--attempts, --repeat and --parallel must be >= 1 and --timeout > 0")
    plan = BenchPlan(bundle=args.bundle, warmup=args.warmup, repeat=args.repeat, threads=args.threads,
                     images=tuple(args.images), timeout_s=args.timeout, attempts=args.attempts,
                     trust_new=args.trust_new, runtime=args.runtime)
    boards = _boards(args)
    progress = LiveProgress(Console(stderr=True, soft_wrap=True, highlight=False))  # result lines unbroken in logs
    try:
        with sigterm_as_interrupt(), progress:
            records = bench_farm(boards, plan, args.results, resume=args.resume, parallel=args.parallel,
                                 progress=progress)
    except KeyboardInterrupt:
        progress.console.print(f"stopped: {progress.done} finished board(s) kept in {args.results}; "
                               "--resume continues with the others")
        raise
    print(args.results)
    return 1 if any(r["status"] != "ok" for r in records) else 0


def main() -> int:
    args = _parser().parse_args()
    commands = {"status": cmd_status, "deploy": cmd_deploy, "bench": cmd_bench, "tracker": cmd_tracker,
                "rpc-bench": cmd_rpc_bench, "keygen": cmd_keygen}
    return commands[args.command](args)


if __name__ == "__main__":
    run_cli(main)
