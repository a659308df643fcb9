"""Board status: reachable, architecture, CPU features, runtime version, free disk."""

from __future__ import annotations

import json

from remote.inventory import Board
from remote.ssh import BoardConnection
from runtime.errors import EdgevitError

PROBE = (
    "import json, os, sys; sys.path.insert(0, '.'); "
    "from runtime.cpu_features import cpu_features, machine_arch; import runtime; "
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
            if probe.returncode == 0:
                status.update(json.loads(probe.stdout.strip().splitlines()[-1]))
            else:
                status["runtime"] = None  # not deployed yet (python -m remote deploy)
            return status
    except EdgevitError as err:
        return {"board": board.name, "reachable": False, "error": str(err)}
