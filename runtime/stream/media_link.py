"""The server <-> media worker link: msgpack messages both ways over one socket, from asyncio.

A message is a msgpack array whose first item names it (``["frame", video_id, ...]``);
``media_pool`` (server side) and ``media_worker`` (worker side) list the messages they
send. Messages sent during one turn of the event loop go out in one write: with 32
players the server announces 32 pictures per tick, and one system call for all of a
worker's share beats one each.
"""

from __future__ import annotations

import asyncio
import socket

import msgpack

READ_BYTES = 1 << 16
MAX_MESSAGE_BYTES = 1 << 20  # an SDP is a few kB; nothing legitimate comes near this


class MessageLink:
    """One end of a link; make it with :meth:`open` inside the event loop that uses it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_MESSAGE_BYTES)
        self._outbox: list[bytes] = []
        self._packer = msgpack.Packer()
        self._loop = asyncio.get_running_loop()
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket) -> "MessageLink":
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: list) -> None:
        """Queue ``message``; it goes out at the end of this turn of the loop (never blocks)."""
        if self.closed:
            return
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(self._packer.pack(message))

    def _flush(self) -> None:
        data, self._outbox = b"".join(self._outbox), []
        if data and not self.closed and not self._writer.is_closing():
            self._writer.write(data)

    async def receive(self) -> list | None:
        """The next message, or None once the other end has gone."""
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                pass
            try:
                data = await self._reader.read(READ_BYTES)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self.closed = True
                return None
            self._unpacker.feed(data)

    async def close(self) -> None:
        self._flush()
        self.closed = True
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
