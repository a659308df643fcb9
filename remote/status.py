"""Board status: reachable, architecture, CPU features, runtimes it can run, free disk, power sampler readable."""

from __future__ import annotations

import json

from remote.inventory import Board
from remote.power import make_sampler
from remote.power.monitor import idle_watts
from remote.ssh import BoardConnection
from runtime.errors import EdgevitError

# Runs in remote_dir with the board's python: its numpy (all the Python binding needs besides a bundle's core), the
# deployed runtime's version (not one installed elsewhere), and the CPU's feature names as the kernel lists them.
PROBE = (
    "import json, os, sys\n"
    "try:\n"
    "    import numpy; version = numpy.__version__\n"
    "except ImportError:\n"
    "    version = None\n"
    "runtime = None\n"
    "if os.path.isfile('runtime/__init__.py'):\n"
    "    sys.path.insert(0, '.'); import runtime; runtime = runtime.__version__\n"
    "features = []\n"
    "for line in open('/proc/cpuinfo'):\n"
    "    if line.split(':')[0].strip() in ('flags', 'Features'):\n"
    "        features = sorted(line.split(':', 1)[1].split()); break\n"
    "print(json.dumps({'numpy': version, 'runtime': runtime, 'features': features,\n"
    "                  'python_missing': [] if version else ['numpy']}))"
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
    """Which runtimes can run bundles on a board: native (the bundle's bin/edgevit-run on its core) and / or python
    (python -m runtime: the same core through the binding, which needs numpy)."""
    glibc = status.get("glibc")
    if status["arch"] not in NATIVE_ARCHES or glibc is None or tuple(glibc) < NATIVE_MIN_GLIBC:
        return []
    python = status.get("python_error") is None and not status.get("python_missing")
    return ["native", "python"] if python else ["native"]


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
