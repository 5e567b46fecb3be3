"""The local socket's front door: every connection's SO_PEERCRED (uid and pid) becomes its identity.

gRPC Python does not expose a Unix caller's credentials, so rigd accepts local connections itself,
reads SO_PEERCRED from each, and relays the bytes to its gRPC server on a private socket. The relay
binds its end of each upstream connection to a fresh random name in a private directory; the gRPC
server sees that name as the peer, and `lookup()` maps it back to the caller's uid and pid. A
connection made to the private socket without the front has no such name and no identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import struct
from pathlib import Path

import structlog

log = structlog.get_logger("rigd.unix")

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_CHUNK = 1 << 16


SUN_PATH_BYTES = 107  # the longest path a Unix socket address holds (sockaddr_un, NUL aside)
RELAY_NAME_BYTES = len("c-") + 24  # each connection's name in the private directory
# The longest public socket path: its private directory's relay names must fit too.
MAX_SOCKET_PATH_BYTES = SUN_PATH_BYTES - len(".d/") - RELAY_NAME_BYTES


class UnixFront:
    def __init__(self, public_path: str, mode: int) -> None:
        self.public_path = public_path
        self.mode = mode
        self.private_dir = Path(f"{public_path}.d")
        self.internal_path = str(self.private_dir / "grpc.sock")
        self._peers: dict[str, tuple[int, int]] = {}  # connection name -> (uid, pid)
        self._server: asyncio.AbstractServer | None = None
        self._relays: set[asyncio.Task[None]] = set()

    def prepare(self) -> None:
        """The private directory (0700, emptied of a previous run's leftovers)."""
        shutil.rmtree(self.private_dir, ignore_errors=True)
        self.private_dir.mkdir(mode=0o700)
        if len(os.fsencode(self.public_path)) > MAX_SOCKET_PATH_BYTES:
            raise OSError(f"unix socket path {self.public_path} is too long for its relay names "
                          f"(at most {MAX_SOCKET_PATH_BYTES} bytes)")

    def listen_socket(self) -> socket.socket:
        """Bind the public socket with the configured mode from the first instant."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o777 & ~self.mode)
        try:
            sock.bind(self.public_path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._accept, sock=sock)

    def lookup(self, peer: str) -> tuple[int, int] | None:
        """The (uid, pid) behind a gRPC peer string such as 'unix:/run/rigd.sock.d/c-…'."""
        name = peer.rpartition("/")[2]
        return self._peers.get(name)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        sock: socket.socket = writer.get_extra_info("socket")
        pid, uid, _gid = _CRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
        name = f"c-{secrets.token_hex((RELAY_NAME_BYTES - 2) // 2)}"
        bound = self.private_dir / name
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up_writer: asyncio.StreamWriter | None = None
        self._peers[name] = (uid, pid)
        try:
            upstream.bind(str(bound))
            upstream.setblocking(False)
            await asyncio.get_running_loop().sock_connect(upstream, self.internal_path)
            up_reader, up_writer = await asyncio.open_unix_connection(sock=upstream)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError as exc:
            log.debug("unix_relay_ended", uid=uid, pid=pid, error=str(exc))
        except asyncio.CancelledError:
            pass  # rigd is stopping: the connection ends here
        finally:
            self._peers.pop(name, None)
            # Once a transport owns the socket only the transport may close it: closing the
            # socket object too would close whatever connection reuses that descriptor number.
            if up_writer is not None:
                up_writer.close()
            else:
                upstream.close()
            writer.close()
            bound.unlink(missing_ok=True)
            self._relays.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        for task in list(self._relays):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        Path(self.public_path).unlink(missing_ok=True)
        shutil.rmtree(self.private_dir, ignore_errors=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, waiting for the far side to take each chunk (no unbounded buffering)."""
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
