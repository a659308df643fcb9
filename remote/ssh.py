"""SSH to a board with paramiko: verified host keys, quoted commands, atomic sha256-checked uploads.

Host keys: a key in known_hosts must match (a changed key is always refused); an unknown host is
refused unless `trust_new`, which records its key. Commands are argv lists joined with shlex.join,
so no argument is ever interpreted by the remote shell. Uploads go to a temporary name, are
checked with the board's sha256sum, then renamed: a cut connection leaves no half-written file
under the final name (stale temporaries are removed by the next deploy).

Every command runs under GUARD, which ends it when its channel's stdin closes: sshd leaves a command
without a terminal running when the client goes, so a host that was interrupted, timed out or died
would otherwise leave its benchmark running on the board. `abort()` (from another thread) uses
the same path to stop a connection's work cleanly.
"""

from __future__ import annotations

import shlex
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko

from remote.inventory import Board
from runtime.bundle import sha256_file
from runtime.errors import EdgevitError

TMP_SUFFIX = ".edgevit-partial"
# `sh -c GUARD edgevit-guard ARGV...`: ARGV runs in the background (stdin /dev/null) while a watcher reads the
# channel's stdin, which the host never writes; at its end (the channel or the connection closed) the watcher
# sends ARGV SIGTERM. The exit status is ARGV's.
GUARD = (
    'exec 3<&0; "$@" </dev/null 3<&- & pid=$!; '
    '{ while read -r _; do :; done <&3; kill -TERM "$pid"; } >/dev/null 2>&1 & watcher=$!; '
    'exec 3<&-; wait "$pid"; status=$?; kill "$watcher" 2>/dev/null; exit "$status"'
)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise EdgevitError(
            f"host key of {hostname} is not in known_hosts ({key.get_name()} {key.get_fingerprint().hex()}); "
            "verify it and rerun with --trust-new to record it"
        )


class BoardConnection:
    """An open SSH connection to one board (use as a context manager)."""

    def __init__(self, board: Board, *, trust_new: bool = False, timeout_s: float = 10.0):
        self.board = board
        self.client = paramiko.SSHClient()
        known_hosts = board.known_hosts.expanduser()
        if known_hosts.is_file():
            self.client.load_host_keys(str(known_hosts))
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if trust_new else _RefuseUnknown())
        try:
            self.client.connect(
                board.host, port=board.port, username=board.user,
                key_filename=str(board.key_file) if board.key_file else None,
                timeout=timeout_s, banner_timeout=timeout_s, auth_timeout=timeout_s,
                allow_agent=False, look_for_keys=board.key_file is None,
            )
        except paramiko.BadHostKeyException:
            raise EdgevitError(
                f"board {board.name}: host key of {board.host}:{board.port} CHANGED since it was recorded in "
                f"{known_hosts}; refusing to connect (possible man-in-the-middle)"
            ) from None
        except paramiko.AuthenticationException:
            raise EdgevitError(f"board {board.name}: authentication as {board.user} failed (check key_file)") from None
        except paramiko.SSHException as err:
            if isinstance(err.__context__, EdgevitError):
                raise EdgevitError(f"board {board.name}: {err.__context__}") from None
            raise EdgevitError(f"board {board.name}: SSH error: {_first_line(err)}") from None
        except EdgevitError as err:
            raise EdgevitError(f"board {board.name}: {err}") from None
        except (OSError, socket.timeout) as err:
            raise EdgevitError(f"board {board.name}: cannot reach {board.host}:{board.port} ({_first_line(err)})") from None
        if trust_new:
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
            self.client.save_host_keys(str(known_hosts))
        self._sftp: paramiko.SFTPClient | None = None
        self._aborted = threading.Event()
        self._lock = threading.Lock()
        self._channels: set[paramiko.Channel] = set()

    def __enter__(self) -> "BoardConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close quietly: after a board went down, closing its dead channels must not mask the real error."""
        try:
            if self._sftp is not None:
                self._sftp.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self.client.close()

    def abort(self) -> None:
        """Stop this connection's work, from another thread: the commands in flight end on the board (their
        stdin closes, GUARD sends them SIGTERM), an upload stops and removes its partial file, and every later
        call raises; the thread using the connection unwinds and closes it."""
        self._aborted.set()
        with self._lock:
            channels = list(self._channels)
        for channel in channels:
            try:
                channel.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass

    def _check_aborted(self, *_progress) -> None:
        if self._aborted.is_set():
            raise EdgevitError(f"board {self.board.name}: interrupted")

    def run(self, argv: list[str], *, timeout_s: float = 600.0, cwd: str | None = None) -> CommandResult:
        """Run argv on the board (quoted, under GUARD), optionally in `cwd`; returns exit code and output.
        A timeout or an abort ends the command on the board too."""
        command = shlex.join(["sh", "-c", GUARD, "edgevit-guard", *argv])
        if cwd is not None:
            command = f"cd {shlex.quote(cwd)} && {command}"
        self._check_aborted()
        try:
            channel = self.client.get_transport().open_session(timeout=timeout_s)
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as err:  # AttributeError: no transport left
            raise EdgevitError(f"board {self.board.name}: connection lost ({_first_line(err)})") from None
        with self._lock:
            self._channels.add(channel)
        try:
            channel.settimeout(timeout_s)
            channel.exec_command(command)
            if self._aborted.is_set():  # abort() came before this channel was registered: end the command as it would
                channel.shutdown_write()
            out = channel.makefile("rb").read().decode(errors="replace")
            err = channel.makefile_stderr("rb").read().decode(errors="replace")
            code = channel.recv_exit_status()
        except (socket.timeout, TimeoutError):
            raise EdgevitError(f"board {self.board.name}: '{argv[0]}' timed out after {timeout_s:.0f} s") from None
        except (paramiko.SSHException, OSError, EOFError) as err:
            raise EdgevitError(f"board {self.board.name}: connection lost ({_first_line(err)})") from None
        finally:
            with self._lock:
                self._channels.discard(channel)
            channel.close()  # a command still running (timeout, abort) sees its stdin close and is ended
        self._check_aborted()  # the exit status of a command ended by abort() is not its answer
        return CommandResult(code, out, err)

    def check(self, argv: list[str], **kwargs) -> str:
        """Run argv and return stdout; a non-zero exit is an EdgevitError with the last stderr line."""
        result = self.run(argv, **kwargs)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise EdgevitError(f"board {self.board.name}: '{shlex.join(argv)[:80]}' failed: {last}")
        return result.stdout

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def remote_sha256(self, paths: list[str]) -> dict[str, str]:
        """sha256 of the remote files that exist (missing ones are left out)."""
        if not paths:
            return {}
        result = self.run(["sha256sum", "--", *paths])
        hashes = {}
        for line in result.stdout.splitlines():
            digest, _, name = line.partition("  ")
            hashes[name] = digest
        return hashes

    def put_atomic(self, local: Path, remote: str, sha256: str | None = None) -> None:
        """Upload to remote + TMP_SUFFIX, verify its sha256 on the board, then rename into place; on any failure
        or abort the partial file is removed (best effort: a board that went down keeps it until the next deploy)."""
        sha256 = sha256 or sha256_file(local)
        partial = remote + TMP_SUFFIX
        try:
            try:
                self.sftp.put(str(local), partial, callback=self._check_aborted)
                self.sftp.chmod(partial, local.stat().st_mode & 0o777)  # the native runner stays executable
            except (OSError, paramiko.SSHException, EOFError) as err:
                raise EdgevitError(f"board {self.board.name}: upload of {local.name} failed ({_first_line(err)})") from None
            if self.remote_sha256([partial]).get(partial) != sha256:
                raise EdgevitError(f"board {self.board.name}: {local.name} arrived corrupted (sha256 mismatch)")
            self.check(["mv", "-f", "--", partial, remote])
        except BaseException:
            try:  # a full disk should not stay full of our partial file
                self.sftp.remove(partial)
            except (OSError, paramiko.SSHException, EOFError):
                pass
            raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or err.__class__.__name__
    return text.splitlines()[0]
