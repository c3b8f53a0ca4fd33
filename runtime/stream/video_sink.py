"""Where a player's pictures go: one interface for a WebRTC video in this process
(:class:`.webrtc.PlayerVideo`) and one living in a media worker (:class:`.media_pool.RemotePlayerVideo`).

Per frame the frame loop takes a :class:`PictureSlot` from the sink, lets the renderer
write the picture straight into the slot's buffer where it has one (a media worker's
page-locked ring), fills the slot with the picture, and offers what the slot returns.
Whether the picture was copied, or was already where it had to be, is the sink's business.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

StagedPicture = object
"""What a sink's slot returns and its ``offer`` takes (opaque to callers): an encoder frame
for an in-process video, a ring sequence number for a media worker's."""


class PictureSlot(Protocol):
    """Where one frame's picture goes; fill it or give it up, once."""

    @property
    def buffer(self) -> np.ndarray | None:
        """``[nbytes]`` uint8 the renderer may write the I420 picture into directly, or None."""
        ...

    def fill(self, picture: np.ndarray) -> StagedPicture | None:
        """The frame's I420 picture (``buffer`` itself when the renderer wrote there): what
        :meth:`VideoSink.offer` takes, or None when the sink is too far behind (dropped)."""
        ...

    def give_up(self) -> None:
        """No picture this frame (rendering failed): the buffer goes back unread."""
        ...


class VideoSink(Protocol):
    """A player's video: negotiated over the WebSocket, fed by the frame loop.

    Attributes:
        end_reason: why it closed, for people ("" while open).
    """

    end_reason: str

    @property
    def ready(self) -> bool:
        """Connected and wanting pictures."""
        ...

    @property
    def closed(self) -> bool: ...

    def slot(self, nbytes: int) -> PictureSlot:
        """Where this frame's picture of ``nbytes`` goes (render thread)."""
        ...

    def offer(self, staged: StagedPicture, captured_at: float, input_seq: int, input_received_at: float | None, render_s: float) -> None:
        """Send a filled slot's picture (again, to repeat it); newest wins."""
        ...

    async def add_candidate(self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None: ...

    async def close(self) -> None: ...
