"""The wire protocol: round trips, strict validation, generated TypeScript."""

from __future__ import annotations

import math
import time

import msgpack
import pytest

from protocol import PROTOCOL_VERSION, ProtocolError, VersionMismatch, decode, encode, messages as m
from protocol.codec import to_dict
from protocol.codec import fields_of
from protocol.markdown import SPEC_PATH, render
from protocol.typescript import DEFAULT_OUT, generate

from fuzz import mutated_client_messages

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def _raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _error(data: bytes, sender="client") -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, sender=sender)
    return info.value


SAMPLES = [
    m.Hello(protocol_version=PROTOCOL_VERSION, player_name="Ada 1", world="demo"),
    m.Hello(protocol_version=PROTOCOL_VERSION, world="hidden", invite="I" * 32, owner_key="K" * 32),
    m.Hello(
        protocol_version=PROTOCOL_VERSION,
        new_world=m.NewWorld(name="new-one", seed=7, caption="a forest", start_image=PNG, visibility="private"),
        view=m.View(width=640, height=360, fov_y=1.2, stereo=True, ipd=0.06),
        resume_token="A" * 22,
    ),
    m.Input(seq=3, t_ms=12.5, forward=1.0, right=-0.5, yaw_delta=0.1, run=True),
    m.HeadPose(seq=4, position=(1.0, -1.7, 2.0), orientation=(1.0, 0.0, 0.0, 0.0)),
    m.Splats(enabled=True, max_splats=500_000),
    m.SplatAck(id=3),
    m.SplatPiece(id=3, chunk_id=1, part=0, parts=2, center=(1.0, 2.0, 3.0), radius=4.0, count=2, spz=b"\x1f\x8b"),
    m.SplatForget(chunk_ids=[1, 2]),
    m.RtcOffer(sdp="v=0\r\n"),
    m.IceCandidate(candidate="candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdp_mid="0", sdp_mline_index=0),
    m.Caption(text="a river"),
    m.RevokeInvite(),
    m.Ping(id=1, t_ms=3.0),
    m.Welcome(
        player_id="p1",
        resume_token="B" * 22,
        world="demo",
        seed=3,
        pose=m.PoseInfo(position=(0.0, -1.7, 0.0), yaw=0.5),
        server=m.ServerInfo(
            version="0.1.0", fps=30, width=640, height=360, codec="h264", bitrate=2_000_000,
            generator="procedural", renderer="cpu", explored_cell_size=2.0,
        ),
    ),
    m.Explored(cell_size=2.0, cells=[(0, 0, 1), (-3, 4, 2)]),
    m.Players(players=[m.PlayerInfo(id="p1", name="Ada", position=(0.0, 0.0, 1.0), yaw=0.2)]),
    m.FrameInfo(rtp_timestamp=90_000, input_seq=3, server_ms=1e12, mtp_ms=12.0),
    m.ErrorMessage(code="bad_field", message="x", field="view.fov_y", ref_type="hello"),
    m.ErrorMessage(code="limit_reached", message="x", ref_type="hello", limit="max_new_worlds_per_client"),
    m.Invite(invite="J" * 32),
    m.Redirect(url="https://stream-2.example.com:8443", world="castle-9"),
    m.RtcAnswer(sdp="v=0\r\n"),
    m.VideoEnded(reason="its media worker stopped (exit code -9)"),
    m.Pong(id=1, t_ms=3.0, server_ms=4.0),
    m.CaptionChanged(text="a frozen lake", player_id="p2", player_name="Bob"),
    m.GenerationRequested(job_id=1, center=(1.0, 0.0, 5.0), radius=4.0, requested_by=["p1", "p2"]),
    m.GenerationProgress(job_id=1, fraction=0.5, message="half"),
    m.GenerationDone(job_id=1, center=(1.0, 0.0, 5.0), radius=4.0, gaussians=1000),
    m.GenerationFailed(job_id=1, error="boom"),
    m.PlayerJoined(player=m.PlayerInfo(id="p2", name="Bob", position=(0.0, 0.0, 0.0))),
    m.PlayerLeft(id="p2", name="Bob"),
    m.Stats(fps=30.0, frame_ms=5.0, encode_ms=2.0, queue_depth=1, mtp_p50_ms=20.0, mtp_p95_ms=40.0, players=2),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: x.TYPE)
def test_round_trip(msg):
    assert decode(encode(msg)) == msg


def test_every_message_type_is_sampled():
    assert {s.TYPE for s in SAMPLES} == set(m.MESSAGES)


def test_wire_form_is_a_flat_map_with_type_first():
    d = to_dict(m.Input(seq=1, forward=0.5))
    assert list(d)[0] == "type" and d["type"] == "input" and d["forward"] == 0.5


def test_defaults_fill_omitted_fields():
    msg = decode(_raw({"type": "input", "seq": 9}), sender="client")
    assert msg == m.Input(seq=9)
    hello = decode(_raw({"type": "hello", "protocol_version": 1, "world": "w", "view": {"width": 320}}))
    assert hello.view.width == 320 and hello.view.height == 720


def _with_nil(obj: dict, path: list[str]) -> dict:
    """A copy of wire map ``obj`` with the field at ``path`` (nested keys) set to nil."""
    out = dict(obj)
    out[path[0]] = None if len(path) == 1 else _with_nil(out[path[0]], path[1:])
    return out


def _optional_paths(cls, obj: dict, prefix=()):
    """(path, default) of every field with a default in ``cls`` and in the structs that
    ``obj`` (its wire map) carries."""
    from protocol.codec import fields_of

    for f in fields_of(cls):
        if not f.required:
            yield (*prefix, f.name), (f.default() if f.factory else f.default)
        if isinstance(obj.get(f.name), dict):
            struct = next(a for a in (f.kind, *getattr(f.kind, "__args__", ())) if isinstance(a, type) and a in m.STRUCTS)
            yield from _optional_paths(struct, obj[f.name], (*prefix, f.name))


@pytest.mark.parametrize(
    "msg", [s for s in SAMPLES if s.SENDER in ("client", "both") and any(_optional_paths(type(s), to_dict(s)))], ids=lambda x: x.TYPE
)
def test_nil_means_the_default_for_every_optional_field(msg):
    """PROTOCOL.md §1: encoders may send nil for any field that has a default (hello.view,
    every view.* field, new_world.caption, input's axes, ping.t_ms, ...)."""
    wire = to_dict(msg)
    for path, default in _optional_paths(type(msg), wire):
        if path in (("world",), ("new_world",)):
            continue  # exactly one of the two must be present (a cross-field rule)
        decoded = decode(_raw(_with_nil(wire, list(path))), sender="client")
        value = decoded
        for key in path:
            value = getattr(value, key)
        assert value == default, (path, value, default)


def test_required_fields_refuse_nil():
    err = _error(_raw({"type": "input", "seq": None}))
    assert (err.code, err.field) == ("bad_field", "seq") and "nil" in err.message


def test_quaternion_norm_rule_is_the_spec_one():
    """Components are not capped: the rule is the norm in [0.9, 1.1] (PROTOCOL.md, head_pose)."""
    for q in ([1.05, 0, 0, 0], [0, 0, 0, -1.09], [0.75, 0.75, 0, 0]):
        msg = decode(_raw({"type": "head_pose", "seq": 1, "position": [0, 0, 0], "orientation": q}))
        assert msg.orientation == tuple(float(c) for c in q)
    err = _error(_raw({"type": "head_pose", "seq": 1, "position": [0, 0, 0], "orientation": [1.11, 0, 0, 0]}))
    assert (err.field, err.code) == ("orientation", "bad_field") and "norm" in err.message


def test_unknown_fields_are_ignored():
    assert decode(_raw({"type": "ping", "id": 2, "future_field": [1, 2]})) == m.Ping(id=2)


def test_ints_accepted_for_floats_but_not_bools_for_ints():
    assert decode(_raw({"type": "input", "seq": 1, "forward": 1})).forward == 1.0
    assert _error(_raw({"type": "input", "seq": True})).field == "seq"


@pytest.mark.parametrize(
    "data, code, field",
    [
        (b"\xc1\x00", "bad_message", None),
        (b"", "bad_message", None),
        (_raw([1, 2]), "bad_message", None),
        (_raw({"seq": 1}), "missing_field", "type"),
        (_raw({"type": "teleport"}), "unknown_type", "type"),
        (_raw({"type": "welcome"}), "unknown_type", "type"),  # server-only message from a client
        (_raw({"type": "input"}), "missing_field", "seq"),
        (_raw({"type": "input", "seq": "1"}), "bad_field", "seq"),
        (_raw({"type": "input", "seq": -1}), "bad_field", "seq"),
        (_raw({"type": "input", "seq": 1, "forward": float("nan")}), "bad_field", "forward"),
        (_raw({"type": "input", "seq": 1, "right": float("inf")}), "bad_field", "right"),
        (_raw({"type": "input", "seq": 1, "forward": 50.0}), "bad_field", "forward"),
        (_raw({"type": "input", "seq": 1, "yaw_delta": 4.0}), "bad_field", "yaw_delta"),
        (_raw({"type": "input", "seq": 1, "run": 1}), "bad_field", "run"),
        (_raw({"type": "head_pose", "seq": 1, "position": [0, 0], "orientation": [1, 0, 0, 0]}), "bad_field", "position"),
        (_raw({"type": "head_pose", "seq": 1, "position": [0, float("nan"), 0], "orientation": [1, 0, 0, 0]}), "bad_field", "position[1]"),
        (_raw({"type": "head_pose", "seq": 1, "position": [2e5, 0, 0], "orientation": [1, 0, 0, 0]}), "bad_field", "position[0]"),
        (_raw({"type": "head_pose", "seq": 1, "position": [0, 0, 0], "orientation": [0.1, 0, 0, 0]}), "bad_field", "orientation"),
        (_raw({"type": "head_pose", "seq": 1, "position": [0, 0, 0], "orientation": [1.2, 0, 0, 0]}), "bad_field", "orientation"),
        (_raw({"type": "head_pose", "seq": 1, "position": [0, 0, 0], "orientation": [1, 0, 0]}), "bad_field", "orientation"),
        (_raw({"type": "caption", "text": "x" * (m.MAX_CAPTION_CHARS + 1)}), "bad_field", "text"),
        (_raw({"type": "hello", "protocol_version": 1}), "bad_field", "world"),
        (_raw({"type": "hello", "protocol_version": 1, "world": "a", "new_world": {}}), "bad_field", "world"),
        (_raw({"type": "hello", "protocol_version": 1, "world": "../../etc"}), "bad_field", "world"),
        (_raw({"type": "hello", "protocol_version": 1, "world": "Caps"}), "bad_field", "world"),
        (_raw({"type": "hello", "protocol_version": 1, "world": "w", "player_name": "<script>"}), "bad_field", "player_name"),
        (_raw({"type": "hello", "protocol_version": 1, "world": "w", "view": {"fov_y": 0.0}}), "bad_field", "view.fov_y"),
        (_raw({"type": "hello", "protocol_version": 1, "world": "w", "view": {"width": 100000}}), "bad_field", "view.width"),
        (_raw({"type": "hello", "protocol_version": 1, "world": "w", "view": 3}), "bad_field", "view"),
        (_raw({"type": "hello", "protocol_version": 1, "new_world": {"start_image": b"GIF89a"}}), "bad_field", "new_world.start_image"),
        (_raw({"type": "hello", "protocol_version": 1, "new_world": {"start_image": "not bytes"}}), "bad_field", "new_world.start_image"),
        (_raw({"type": "hello", "protocol_version": 1, "new_world": {"seed": 2**40}}), "bad_field", "new_world.seed"),
        (_raw({"type": "rtc_offer", "sdp": "x" * (m.MAX_SDP_CHARS + 1)}), "bad_field", "sdp"),
        (_raw({"type": "caption", "text": "x" * 70_000}), "too_large", None),
    ],
)
def test_bad_input_is_a_typed_error(data, code, field):
    err = _error(data)
    assert (err.code, err.field) == (code, field), err
    assert err.message and code in m.ERROR_CODES


def test_oversized_start_image_and_hello():
    big = _raw({"type": "hello", "protocol_version": 1, "new_world": {"start_image": PNG + b"\0" * m.MAX_START_IMAGE_BYTES}})
    err = _error(big)
    assert (err.code, err.field) == ("bad_field", "new_world.start_image")
    assert _error(b"\0" * (m.MAX_HELLO_BYTES + 1)).code == "too_large"


def test_text_frames_are_refused():
    assert _error("{}").code == "bad_message"  # type: ignore[arg-type]


def test_deeply_nested_garbage_does_not_crash():
    data = b"\x91" * 100_000 + b"\x00"  # 100k nested arrays
    assert _error(data).code == "too_large"  # refused by depth before unpacking
    assert _error(data, sender="server").code == "bad_message"  # msgpack's own stack limit


# Messages whose unpacking once froze the server's event loop for seconds: millions of
# one-byte values, each container under msgpack's per-container limits.
EXPENSIVE = {
    "8 MiB of empty arrays": b"\xdc\x00\x7f" + (b"\xdc\xff\xff" + b"\x90" * 65535) * 127,
    "a ping nesting arrays": _raw({"type": "ping", "id": 1, "pad": [[[0] * 1000] * 100] * 80}),
    "a hello nesting maps": _raw({"type": "hello", "protocol_version": 1, "world": "w", "x": [{str(i): [i] * 200} for i in range(300)]}),
    "nesting 12 deep": _raw({"type": "ping", "id": 1, "pad": [[[[[[[[[[["x" * 600]]]]]]]]]]]}),
}


@pytest.mark.parametrize("data", list(EXPENSIVE.values()), ids=list(EXPENSIVE))
def test_expensive_messages_are_refused_before_unpacking(data):
    start = time.thread_time()  # CPU time: a busy machine stretches wall-clock time, not this
    for _ in range(20):
        err = _error(data)
    assert err.code == "too_large" and ("values" in err.message or "deep" in err.message), err
    # bounded work: 20 refusals of up to 8 MiB each in well under a second of CPU (unpacking
    # the first of them once took seconds)
    assert time.thread_time() - start < 1.0


def test_cost_budget_admits_every_real_message_and_extra_fields():
    hello = m.Hello(protocol_version=PROTOCOL_VERSION, player_name="Ada", new_world=m.NewWorld(name="w", caption="c" * 500, start_image=PNG))
    assert decode(encode(hello), sender="client") == hello
    roomy = _raw({"type": "ping", "id": 3, "future": list(range(m.MAX_CLIENT_VALUES - 20))})
    assert decode(roomy, sender="client") == m.Ping(id=3)


def test_version_mismatch_is_found_by_decode():
    err = _error(_raw({"type": "hello", "protocol_version": 99, "world": 5, "new_field": {}}))
    assert isinstance(err, VersionMismatch) and err.version == 99
    assert (err.code, err.field, err.ref_type) == ("version_mismatch", "protocol_version", "hello")


def test_errors_name_the_message_type():
    assert _error(_raw({"type": "input", "seq": "x"})).ref_type == "input"
    assert _error(_raw({"type": "x" * 100})).ref_type == "x" * 64
    assert _error(b"\xc1").ref_type is None


def test_limits_are_consistent():
    assert m.MAX_START_IMAGE_BYTES < m.MAX_HELLO_BYTES
    assert m.MAX_SDP_CHARS < m.MAX_MESSAGE_BYTES
    assert m.MAX_LOOK_DELTA == pytest.approx(math.pi)
    assert set(m.CLIENT_MESSAGES) & set(m.SERVER_MESSAGES) == {"ice_candidate"}


def test_generated_typescript_is_checked_in_and_current():
    assert DEFAULT_OUT.exists(), "run `python -m protocol.typescript`"
    assert DEFAULT_OUT.read_text() == generate(), "clients/web/src/protocol.ts is stale: run `python -m protocol.typescript`"


def test_typescript_names_every_message_and_constant():
    ts = generate()
    for type_, cls in m.MESSAGES.items():
        assert f'type: "{type_}";' in ts and f"export interface {cls.__name__} " in ts
    assert f"export const PROTOCOL_VERSION = {PROTOCOL_VERSION};" in ts
    assert "start_image?: Uint8Array | null;" in ts


def test_protocol_md_tables_are_generated_and_current():
    text = SPEC_PATH.read_text()
    assert render(text) == text, "protocol/PROTOCOL.md's tables are stale: run `python -m protocol.markdown`"


def test_protocol_md_names_every_message_field_error_and_limit():
    text = SPEC_PATH.read_text()
    for type_, cls in m.MESSAGES.items():
        assert f"**`{type_}`**" in text
        for f in fields_of(cls):
            assert f"| `{f.name}`" in text, (type_, f.name)
    for code in m.ERROR_CODES:
        assert f"| `{code}` |" in text
    assert f"| `MAX_HELLO_BYTES` | {m.MAX_HELLO_BYTES:,} (8 MiB) |".replace(",", " ") in text


def test_protocol_md_drift_is_caught():
    """A hand edit inside a generated table is undone by the generator (so the test above fails on it)."""
    text = SPEC_PATH.read_text()
    edited = text.replace("| `caption` | 1 /s |", "| `caption` | 5 /s |")
    assert edited != text and render(edited) == text


def test_fuzzed_client_messages_decode_or_raise_protocol_error():
    start = time.thread_time()  # CPU time: a busy machine stretches wall-clock time, not this
    outcomes = {}
    for data in mutated_client_messages(seed=15, count=3000):
        try:
            decode(data, sender="client")
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except ProtocolError as exc:  # anything else is a bug
            assert exc.code in m.ERROR_CODES, exc
            outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
    assert len(outcomes) >= 4, outcomes  # the mutations reach several kinds of refusal
    assert time.thread_time() - start < 10.0  # 3,000 messages: bounded work each
