"""The TVM RPC tracker's address: the one record compile (--tune-rpc) and remote (rpc-bench, tracker) share."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import EdgevitError


@dataclass(frozen=True)
class Tracker:
    """HOST:PORT of a tracker; the default is one on this machine at TVM's usual port."""

    host: str = "127.0.0.1"
    port: int = 9190

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Tracker:
        host, _, port = text.rpartition(":")
        try:
            return cls(host or cls.host, int(port))
        except ValueError:
            raise EdgevitError(f"--tracker must be HOST:PORT, got '{text}'") from None
