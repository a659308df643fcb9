"""Board status: reachable, architecture, CPU features, runtime version, free disk, power sampler readable."""

from __future__ import annotations

import json

from remote.inventory import Board
from remote.power import make_sampler
from remote.power.monitor import idle_watts
from remote.ssh import BoardConnection
from runtime.errors import EdgevitError

# Runs in remote_dir with the board's python; reports the deployed runtime only (not one installed elsewhere).
PROBE = (
    "import json, os, sys\n"
    "if not os.path.isfile('runtime/__init__.py'):\n    print(json.dumps({'runtime': None})); sys.exit()\n"
    "sys.path.insert(0, '.')\n"
    "from runtime.cpu_features import cpu_features, machine_arch; import runtime\n"
    "print(json.dumps({'arch': machine_arch(), 'features': sorted(cpu_features()), 'runtime': runtime.__version__}))"
)


def board_status(board: Board, *, trust_new: bool = False) -> dict:
    """What the farm needs to know about one board; unreachable boards get reachable=False and the reason."""
    try:
        with BoardConnection(board, trust_new=trust_new) as conn:
            status = {"board": board.name, "reachable": True, "arch": conn.check(["uname", "-m"]).strip()}
            conn.check(["mkdir", "-p", "--", board.remote_dir])
            df = conn.check(["df", "-Pk", board.remote_dir]).splitlines()[-1].split()
            status["free_disk_mb"] = round(int(df[3]) / 1024, 1)
            probe = conn.run([board.python, "-c", PROBE], cwd=board.remote_dir, timeout_s=120)
            if probe.returncode != 0:
                raise EdgevitError(f"board {board.name}: {board.python} failed: {probe.stderr.strip()[-200:]}")
            status.update(json.loads(probe.stdout.strip().splitlines()[-1]))
            sampler = make_sampler(board.power)
            if sampler is not None:
                readings = idle_watts(conn, sampler, seconds=1.0)
                status["power_sampler"] = sampler.name
                status["power_readable"] = bool(readings)
                status["power_w"] = sum(readings) / len(readings) if readings else None
            return status
    except EdgevitError as err:
        return {"board": board.name, "reachable": False, "error": str(err)}
