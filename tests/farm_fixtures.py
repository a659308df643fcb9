"""A board farm on this machine: real sshd daemons on 127.0.0.1, some running their commands in an
emulated aarch64 board (tests/emulated_board.py), with generated host and user keys."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests import processes
from tests.emulated_board import QEMU, SITE, EmulatedBoard

SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    """A new ed25519 key pair at path (no passphrase); returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class SshBoard:
    """One sshd on 127.0.0.1:port; `stop()` kills it (a board going down)."""

    name: str
    port: int
    root: Path
    process: subprocess.Popen
    host_public_key: str

    def stop(self) -> None:
        """Kill the listener and every per-connection sshd it forked, as a board losing power would."""
        processes.stop(self.process)


def _board_shell(root: Path, board: EmulatedBoard | None, runner_wrapper: str | None) -> Path:
    """The ForceCommand: sftp as is; other commands in bash with the board's python3 / uname first on PATH."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    if board is not None:
        (bin_dir / "python3").write_text(
            "#!/bin/sh\n"
            f"export PYTHONPATH={board.sysroot / SITE}${{PYTHONPATH:+:$PYTHONPATH}}\n"
            f'exec {board.python_executable()} "$@"\n'
        )
        (bin_dir / "uname").write_text('#!/bin/sh\n[ "$1" = "-m" ] && exec echo aarch64\nexec /usr/bin/uname "$@"\n')
        runner_wrapper = f"{QEMU} -cpu {board.cpu} -L {board.sysroot}"
    else:
        os.symlink(sys.executable, bin_dir / "python3")
    # a bundle's bin/edgevit-run runs behind `runner_wrapper` (the board's CPU: an aarch64 runner under qemu; a test's
    # faults); commands arrive as "[cd DIR && ]sh -c GUARD edgevit-guard PROGRAM ARGS" (remote.ssh.BoardConnection.run)
    wrap = "" if runner_wrapper is None else (
        "re='^(.* edgevit-guard )([^ ]*/bin/edgevit-run)( .*)?$'\n"
        'if [[ $cmd =~ $re ]]; then\n'
        f'  cmd="${{BASH_REMATCH[1]}}{runner_wrapper} ${{BASH_REMATCH[2]}}${{BASH_REMATCH[3]}}"\n'
        "fi\n"
    )
    shell = root / "board-shell"
    shell.write_text(
        "#!/bin/bash\n"
        f'if [ "$SSH_ORIGINAL_COMMAND" = "{SFTP_SERVER}" ]; then exec {SFTP_SERVER}; fi\n'
        f"export PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin HOME={root}\n"
        'cmd=$SSH_ORIGINAL_COMMAND\n'
        f"{wrap}"
        'exec /bin/bash -c "$cmd"\n'
    )
    for path in [shell, *bin_dir.iterdir()]:
        path.chmod(0o755)
    return shell


def start_sshd(name: str, root: Path, authorized_key: str, board: EmulatedBoard | None,
               runner_wrapper: str | None = None) -> SshBoard:
    """Start an sshd for one board under `root` (its keys, config and remote files live there); `runner_wrapper`
    (a command prefix) runs a bundle's bin/edgevit-run there, as qemu does on an emulated board."""
    root.mkdir(parents=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    host_key = root / "host_key"
    host_public = keygen(host_key)
    (root / "authorized_keys").write_text(authorized_key + "\n")
    port = free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "MaxStartups 100",  # a shared sshd serves many boards of a test farm at once (the default drops the 11th)
        f"Subsystem sftp {SFTP_SERVER}", f"ForceCommand {_board_shell(root, board, runner_wrapper)}", "",
    ]))
    with open(root / "sshd.log", "w") as log:
        process = processes.start_group([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return SshBoard(name, port, root, process, host_public)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    processes.stop(process)
    raise RuntimeError(f"sshd for {name} did not start: {(root / 'sshd.log').read_text()[-1000:]}")


def known_hosts_line(board: SshBoard) -> str:
    key_type, key = board.host_public_key.split()[:2]
    return f"[127.0.0.1]:{board.port} {key_type} {key}"
