"""Networking: HTTP routes, the WebSocket connection per player, WebRTC video (aiortc + PyAV), metrics and rate limits."""
