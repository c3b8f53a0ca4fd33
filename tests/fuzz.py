"""Fuzz input for the protocol and server tests: valid client messages, randomly damaged."""

from __future__ import annotations

import random

from protocol import PROTOCOL_VERSION, encode, messages as m


def mutated_client_messages(seed: int, count: int):
    """Valid client messages with random bytes flipped, cut, repeated or inserted."""
    rng = random.Random(seed)
    valid = [
        encode(m.Input(seq=3, forward=1.0, yaw_delta=0.1)),
        encode(m.HeadPose(seq=4, position=(1.0, -1.6, 2.0), orientation=(1.0, 0.0, 0.0, 0.0))),
        encode(m.Hello(protocol_version=PROTOCOL_VERSION, player_name="Ada", new_world=m.NewWorld(name="w", caption="a forest"))),
        encode(m.Caption(text="snow")),
        encode(m.Ping(id=1)),
    ]
    for _ in range(count):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            op, i = rng.randrange(4), rng.randrange(len(data))
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i:]
            elif op == 2:
                data[i:i] = bytes([rng.choice([0x90, 0x91, 0x80, 0xDC, 0xDD, 0xDE, 0xDF, 0xC4, 0xD9])]) * rng.randint(1, 64)
            else:
                data[i:i] = rng.randbytes(rng.randint(1, 16))
            if not data:
                data = bytearray(b"\x80")
        yield bytes(data)
