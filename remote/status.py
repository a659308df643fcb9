"""Board status: reachable, architecture, CPU features, runtimes it can run, free disk, power sampler readable."""

from __future__ import annotations

import json

from remote.inventory import Board
from remote.power import make_sampler
from remote.power.monitor import idle_watts
from remote.ssh import BoardConnection
from runtime.errors import EdgevitError

# Runs in remote_dir with the board's python; reports the deployed runtime only (not one installed elsewhere),
# and which of the Python runtime's dependencies the board lacks.
PROBE = (
    "import importlib.util, json, os, sys\n"
    "missing = [m for m in ('numpy', 'PIL', 'tvm') if importlib.util.find_spec(m) is None]\n"
    "if not os.path.isfile('runtime/__init__.py'):\n"
    "    print(json.dumps({'runtime': None, 'python_missing': missing})); sys.exit()\n"
    "sys.path.insert(0, '.')\n"
    "from runtime.cpu_features import cpu_features, machine_arch; import runtime\n"
    "print(json.dumps({'arch': machine_arch(), 'features': sorted(cpu_features()), 'runtime': runtime.__version__,\n"
    "                  'python_missing': missing}))"
)
# The native runner's libraries come from manylinux_2_28 wheels: they need glibc 2.28 or newer.
NATIVE_ARCHES = ("x86_64", "aarch64")
NATIVE_MIN_GLIBC = (2, 28)


def _glibc(conn: BoardConnection) -> tuple[int, ...] | None:
    """The board's glibc version (getconf GNU_LIBC_VERSION), None when it has none (musl) or says nothing."""
    result = conn.run(["getconf", "GNU_LIBC_VERSION"])
    words = result.stdout.split()
    if result.returncode != 0 or len(words) != 2 or words[0] != "glibc":
        return None
    return tuple(int(part) for part in words[1].split(".") if part.isdigit())


def runtimes(status: dict) -> list[str]:
    """Which runtimes can run bundles on a board: native (bin/edgevit-run) and / or python (python -m runtime)."""
    found = []
    glibc = status.get("glibc")
    if status["arch"] in NATIVE_ARCHES and glibc is not None and tuple(glibc) >= NATIVE_MIN_GLIBC:
        found.append("native")
    if status.get("python_error") is None and not status.get("python_missing"):
        found.append("python")
    return found


def board_status(board: Board, *, trust_new: bool = False) -> dict:
    """What the farm needs to know about one board; unreachable boards get reachable=False and the reason."""
    try:
        with BoardConnection(board, trust_new=trust_new) as conn:
            status = {"board": board.name, "reachable": True, "arch": conn.check(["uname", "-m"]).strip()}
            conn.check(["mkdir", "-p", "--", board.remote_dir])
            df = conn.check(["df", "-Pk", board.remote_dir]).splitlines()[-1].split()
            status["free_disk_mb"] = round(int(df[3]) / 1024, 1)
            glibc = _glibc(conn)
            status["glibc"] = ".".join(map(str, glibc)) if glibc else None
            probe = conn.run([board.python, "-c", PROBE], cwd=board.remote_dir, timeout_s=120)
            if probe.returncode == 0:
                status.update(json.loads(probe.stdout.strip().splitlines()[-1]))
            else:  # a board without Python still runs self-contained bundles natively
                status["runtime"] = None
                status["python_error"] = f"{board.python} failed: {(probe.stderr.strip().splitlines() or ['?'])[-1][-200:]}"
            status["runtimes"] = runtimes({**status, "glibc": glibc})
            sampler = make_sampler(board.power)
            if sampler is not None:
                readings = idle_watts(conn, sampler, seconds=1.0)
                status["power_sampler"] = sampler.name
                status["power_readable"] = bool(readings)
                status["power_w"] = sum(readings) / len(readings) if readings else None
            return status
    except EdgevitError as err:
        return {"board": board.name, "reachable": False, "error": str(err)}
