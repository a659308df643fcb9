"""A farm of many boards on three real sshd daemons (tests.farm_fixtures), with the faults a farm meets: boards
slower than the run (their bench waits for a release file), boards refusing the farm's key, boards whose
connection drops mid-bench the first time, a board whose host key changed. tests/test_farm_scale.py runs it;
`python -m tests.fault_farm` times `remote bench` on a healthy farm of the same size."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from runtime.bundle import read_manifest
from tests.farm_fixtures import SshBoard, keygen, known_hosts_line, start_sshd
from tests.helpers import REPO

SLOW, DROPPING, REFUSING, CHANGED, HEALTHY = "slow", "dropping", "refusing-key", "changed-host-key", "healthy"
FAULTS = {SLOW: 3, DROPPING: 2, REFUSING: 2, CHANGED: 1}  # boards of each kind; the rest are healthy
MEASURABLE = (SLOW, DROPPING, HEALTHY)

# What a board's bin/edgevit-run goes through (farm_fixtures.start_sshd's runner_wrapper); commands run in the
# board's remote_dir. A slow board's bench starts once RELEASE exists. A dropping board's first bench kills its
# SSH session (the nearest sshd above it), then waits to be ended by the board (the client is gone).
WAIT_FOR_RELEASE = '#!/bin/sh\nwhile [ ! -e "{release}" ]; do sleep 0.2; done\nexec "$@"\n'
DROP_ONCE = """#!/bin/sh
if [ ! -e .dropped ]; then
  touch .dropped
  p=$PPID
  while [ "$p" -gt 1 ]; do
    case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; break;; esac
    read -r _ _ _ p _ < /proc/$p/stat
  done
  exec sleep 600
fi
exec "$@"
"""


@dataclass
class FaultFarm:
    root: Path
    inventory: Path
    kinds: dict[str, str]  # board name -> kind
    release: Path  # slow boards wait for it
    sshds: list[SshBoard] = field(default_factory=list)

    def names(self, *kinds: str) -> list[str]:
        return [name for name, kind in self.kinds.items() if kind in kinds]

    def remote_dir(self, name: str) -> Path:
        return self.root / "boards" / name

    def benches_running(self) -> list[str]:
        """Boards where a process of a bundle's runner (its wrapper and guard included) is running."""
        boards = []
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            cwd = Path(proc.info["cwd"] or "/")
            if cwd.parent == self.root / "boards" and "bin/edgevit-run" in " ".join(proc.info["cmdline"] or ()):
                boards.append(cwd.name)
        return sorted(boards)

    def stop(self) -> None:
        for sshd in self.sshds:
            sshd.stop()


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _preseed(bundle: Path, remote_bundle: Path) -> None:
    """Put the bundle's large files on a board as a previous deploy would have (hard links: no copies), so the
    run uploads only its manifest, labels and runner; keeps a test farm of dozens of boards cheap."""
    for name in read_manifest(bundle).files:
        if name.startswith("bin/") or name == "labels.txt":
            continue
        (remote_bundle / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(bundle / name, remote_bundle / name)


def build_fault_farm(root: Path, bundle: Path, *, boards: int = 32, faults: bool = True, preseed: bool = True) -> FaultFarm:
    """`boards` boards (slow ones first, so they hold workers from the start), an inventory for them, their sshds."""
    root.mkdir(parents=True)
    user_key, stranger_key = root / "id_farm", root / "id_stranger"
    public = keygen(user_key)
    keygen(stranger_key)
    farm = FaultFarm(root, root / "farm.toml", {}, root / "release")
    counts = {**(FAULTS if faults else {}), HEALTHY: boards - (sum(FAULTS.values()) if faults else 0)}
    for kind, count in counts.items():
        farm.kinds.update({f"{kind}-{i:02d}": kind for i in range(count)})
    try:
        main = start_sshd("main", root / "sshd-main", public, None)
        farm.sshds.append(main)
        slow = start_sshd("slow", root / "sshd-slow", public, None,
                          _script(root / "wait-for-release", WAIT_FOR_RELEASE.format(release=farm.release)))
        farm.sshds.append(slow)
        dropping = start_sshd("dropping", root / "sshd-dropping", public, None, _script(root / "drop-once", DROP_ONCE))
        farm.sshds.append(dropping)
    except BaseException:
        farm.stop()
        raise
    known_hosts, changed = root / "known_hosts", root / "known_hosts_changed"
    known_hosts.write_text("".join(known_hosts_line(s) + "\n" for s in farm.sshds))
    changed.write_text(f"[127.0.0.1]:{main.port} {keygen(root / 'impostor_host_key')}\n")
    port = {SLOW: slow.port, DROPPING: dropping.port}
    entries = []
    for name, kind in farm.kinds.items():
        entry = [f'name = "{name}"', f"port = {port.get(kind, main.port)}", f'remote_dir = "{farm.remote_dir(name)}"']
        if kind == REFUSING:
            entry.append(f'key_file = "{stranger_key}"')
        if kind == CHANGED:
            entry.append(f'known_hosts = "{changed}"')
        if preseed and kind in MEASURABLE:
            _preseed(bundle, farm.remote_dir(name) / "bundles" / bundle.name)
        entries.append("[[board]]\n" + "\n".join(entry) + "\n")
    farm.inventory.write_text(
        f'[defaults]\nhost = "127.0.0.1"\npreset = "host"\nuser = "root"\nkey_file = "{user_key}"\n'
        f'known_hosts = "{known_hosts}"\n\n' + "\n".join(entries)
    )
    return farm


def bench_command(farm: FaultFarm, bundle: Path, results: Path, *flags: str) -> list[str]:
    """`python -m remote bench` on the farm, each board's bench one quick batch-1 run on one thread."""
    return [sys.executable, "-m", "remote", "--inventory", str(farm.inventory), "bench", str(bundle),
            "--results", str(results), "--warmup", "0", "--repeat", "1", "--threads", "1", "--attempts", "2",
            "--timeout", "300", *flags]


def main() -> None:
    """Time a 32-board `remote bench` (healthy boards, full deploys) at each --parallel given."""
    from tests.helpers import cached_bundle

    parser = argparse.ArgumentParser(prog="python -m tests.fault_farm", description=main.__doc__)
    parser.add_argument("--parallel", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--boards", type=int, default=32)
    parser.add_argument("--preseed", action="store_true", help="boards already hold the bundle's large files")
    args = parser.parse_args()
    bundle = cached_bundle("deit_tiny-host-fp32", "--target", "host")
    for parallel in args.parallel:
        with tempfile.TemporaryDirectory(prefix="fault-farm-") as tmp:
            farm = build_fault_farm(Path(tmp) / "farm", bundle, boards=args.boards, faults=False, preseed=args.preseed)
            try:
                start = time.perf_counter()
                result = subprocess.run(bench_command(farm, bundle, Path(tmp) / "farm.jsonl", "--parallel", str(parallel)),
                                        cwd=REPO, capture_output=True, text=True)
                wall_s = time.perf_counter() - start
            finally:
                farm.stop()
            print(f"{args.boards} boards, --parallel {parallel}{', preseeded' if args.preseed else ''}: "
                  f"{wall_s:.1f} s wall, exit {result.returncode}", flush=True)


if __name__ == "__main__":
    main()
