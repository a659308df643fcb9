"""Processes the tests start (sshd farms, RPC trackers and servers, emulated boards) and how they are stopped:
each in its own process group, stopped with everything it started, and a check that nothing outlives the run."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

GRACE_S = 3.0


def start_group(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start argv as the leader of a new session (and process group), so stop() reaches all it starts."""
    return subprocess.Popen(argv, start_new_session=True, **popen_kwargs)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_all(processes: list[psutil.Process]) -> None:
    for proc in processes:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def stop(process: subprocess.Popen, timeout_s: float = 10) -> None:
    """Kill `process`, its process group when it leads one, and every descendant (also those that left the
    group, as sshd's per-connection children do), then wait for it. Safe to call twice."""
    descendants = _descendants(process.pid)
    try:  # no such group (ESRCH) unless `process` was started as a group leader
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.kill()
    kill_all(descendants)
    process.wait(timeout=timeout_s)
    psutil.wait_procs(descendants, timeout=timeout_s)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def stop_all(*processes: subprocess.Popen) -> None:
    """stop() each process, all of them even when one fails to stop; the first failure is raised."""
    errors = []
    for process in processes:
        try:
            stop(process)
        except Exception as err:  # noqa: BLE001 - keep stopping the others
            errors.append(err)
    if errors:
        raise errors[0]


@contextmanager
def running(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`with running(start_group(...)) as process:` stops the process on leaving, also on an error."""
    try:
        yield process
    finally:
        stop(process)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def running_descendants() -> list[psutil.Process]:
    """The processes this one started, directly or not, that still run (zombies aside)."""
    return [proc for proc in psutil.Process().children(recursive=True) if _alive(proc)]


def leftover_processes(grace_s: float = GRACE_S, ignore: frozenset[int] = frozenset()) -> list[str]:
    """Descendants of this process (but `ignore`'s pids) still running after `grace_s` seconds; they are
    killed, and described."""
    started = [proc for proc in running_descendants() if proc.pid not in ignore]
    _, alive = psutil.wait_procs(started, timeout=grace_s)
    alive = [proc for proc in alive if _alive(proc)]
    described = [describe(proc) for proc in alive]
    kill_all(alive)
    psutil.wait_procs(alive, timeout=grace_s)
    return described
