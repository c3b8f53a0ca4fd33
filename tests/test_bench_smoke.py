"""Smoke runs of bench/encode.py, bench/baseline.py and bench/media.py at tiny sizes, so they don't rot.

Synthetic frames (no World rendering) and short runs; no timing is asserted, only that
every stage runs and reports sane shapes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import baseline, encode
from bench.common import format_table, ping_pong_index, synthetic_frames, write_json

W, H = 160, 96


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return synthetic_frames(W, H, 8)


def test_ping_pong_never_jumps():
    seq = [ping_pong_index(k, 4) for k in range(10)]
    assert seq == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


def test_stamp_round_trip(frames):
    for k in (0, 1, 77, 4095, 65535):
        assert baseline.read_stamp(baseline.stamp(frames[0], k)) == k


def test_stamp_survives_jpeg(frames):
    codec = baseline.JpegCodec(W, H, 20)
    decoded = codec.decode(codec.encode(baseline.stamp(frames[3], 1234)))
    assert baseline.read_stamp(decoded) == 1234


def test_encode_cost_and_one_trial(frames, tmp_path):
    cost = encode.encode_cost(frames, "h264")
    assert cost["ms_median"] > 0 and cost["frames"] == 2 * len(frames) - 2
    path = tmp_path / "frames.npy"
    np.save(path, frames)
    trial = encode.Trial("vp8", str(path), fps=30, streams=2, first_stream=0, total_streams=2, duration_s=0.3)
    result = encode.run_trial(trial)
    assert result["encoded"] == 2 * 9 and 0 <= result["late"] <= result["encoded"]


def test_encode_cost_compares_rate_control_at_known_quality(frames):
    capped = encode.encode_cost(frames, "h264", crf=18)
    targeted = encode.encode_cost(frames, "h264", crf=None)
    assert (capped["rate"], targeted["rate"]) == ("18", "bitrate")
    # Both decode back to the rendered frames; near-lossless CRF 18 keeps them recognisable.
    assert capped["psnr_db"] > 30 and targeted["psnr_db"] > 30
    assert encode.encode_cost(frames, "vp8", crf=18)["rate"] == "bitrate"  # CRF is H.264's alone


def test_encode_run_with_capacity(frames, tmp_path):
    result = encode.run(
        resolutions=[(W, H)], fps_list=[30], codecs=["h264", "nvenc"], trial_s=0.3, workers=1,
        frames_by_resolution={(W, H): frames}, log=lambda *a: None,
    )
    h264 = [r for r in result["capacity"] if r["codec"] == "h264"]
    assert len(h264) == 1 and h264[0]["max_streams"] >= 0
    assert result["nvenc"] == "available" or result["nvenc"].startswith("not available")
    print(format_table(result["cost"], encode.COST_COLUMNS))
    write_json(tmp_path / "encode.json", result)
    assert json.loads((tmp_path / "encode.json").read_text())["machine"]["usable_cores"] >= 1


def test_quality_match_picks_not_worse():
    sweep = [{"qscale": q, "psnr_db": 45.0 - q, "setting": f"q{q}"} for q in (1, 2, 5, 10)]
    assert baseline.match_quality(41.5, sweep)["qscale"] == 2
    assert baseline.match_quality(50.0, sweep)["qscale"] == 1  # none reaches it: the best


def test_baseline_run_all_paths(frames):
    result = baseline.run(W, H, duration_s=0.5, frames=frames, qscales=(2, 10), log=lambda *a: None)
    assert [r["path"] for r in result["rows"]] == list(baseline.PATHS)
    for row in result["rows"]:
        assert row["sent_frames"] == 15
        assert row["decoded_frames"] > 0, row
        assert row["psnr_db"] is None or row["psnr_db"] > 20


@pytest.mark.parametrize("decode, threads", [("none", "1,2"), ("headers", "1")])
def test_media_bench_streams_to_real_peers(tmp_path, decode, threads):
    """bench/media.py end to end at a tiny size: a media worker, two receiving aiortc peers
    (counting decoded-frame stand-ins, or RTP headers alone)."""
    import subprocess

    out = tmp_path / "media.json"
    cmd = [sys.executable, "-m", "bench.media", "--resolution", f"{W}x{H}", "--players", "2", "--duration", "1",
           "--workers", "1", "--encode-threads", threads, "--client-decode", decode, "--synthetic", "--json", str(out)]
    run = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["encode_threads"] for r in rows] == [int(t) for t in threads.split(",")]
    for row in rows:
        assert row["players"] == 2 and row["sent_fps"] > 5 and row["recv_fps"] > 5 and row["cpu_ms_per_frame"] > 0
    assert "CPU ms/frame" in run.stdout


@pytest.mark.timeout(240)
def test_attack_bench_runs(tmp_path, capsys):
    """bench/attacks.py against its own server, one short phase each of the baseline and
    the bad-message flood: the player is never disconnected and a newcomer still joins."""
    from bench import attacks

    out = tmp_path / "attacks.json"
    attacks.main(["--attacks", "none,bad_messages", "--duration", "1.5", "--attacker-addresses", "2", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["attack"] for r in rows] == ["none", "bad_messages"]
    assert not any(r["disconnected"] for r in rows)
    assert all(r["new_player"].startswith("ok") for r in rows), rows
    assert rows[1]["attacker_sent"] > 0 and rows[1]["replies"]
    assert rows[1]["server_read_mib"] > 0, rows  # the attacker's messages, at least
    assert "largest gap" in capsys.readouterr().out


def test_start_image_bench_runs(tmp_path, capsys):
    """bench/start_image.py: a world folder holds about the PNG sent, not the raw pixels."""
    from bench import start_image

    out = tmp_path / "start_image.json"
    start_image.main(["--sizes", "512", "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["world_folder_kb"] < row["png_kb"] + 10 < row["raw_npz_mb"] * 1e3
    assert "world folder KB" in capsys.readouterr().out


def test_webrtc_check_connects_two_local_peers(capsys):
    from bench import webrtc_check

    assert webrtc_check.main(["--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert "cryptography" in out and "connected" in out


@pytest.mark.timeout(240)
def test_flood_cost_bench_runs(tmp_path):
    """bench/flood_cost.py against its own server: a few malformed messages are answered with
    their typed error, an oversized frame closes its connection (1009) and a handshake from an
    address with too many such closes gets 429, each with the loop's CPU per item."""
    from bench import flood_cost

    out = tmp_path / "flood_cost.json"
    flood_cost.main(["--kinds", "garbage,close_1009,refused_429", "--count", "5", "--big-count", "1", "--json", str(out)])
    rows = {r["kind"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["garbage"]["outcomes"] == "bad_message 5", rows
    assert rows["close_1009"]["outcomes"] == "closed 1009 1", rows
    assert rows["refused_429"]["outcomes"] == "HTTP 429 5", rows
    assert all(r["loop_cpu_us"] is not None for r in rows.values())


@pytest.mark.timeout(240)
def test_loop_profile_bench_runs(tmp_path):
    """bench/loop_profile.py profiles its own server's event loop through a second of the
    bad-message flood (in a process of its own: it sets the switch interval and freezes the
    heap, as the server does): it reports the loop's CPU and its busiest window, and counts
    the 8 MiB messages the server read, within the address's large-message budget."""
    import subprocess

    from runtime.stream.websocket import LARGE_BURST

    out = tmp_path / "loop_profile.json"
    cmd = [sys.executable, "-m", "bench.loop_profile", "--duration", "1", "--top", "5", "--json", str(out)]
    run = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["loop_cpu_ms"] > 0 and result["busiest_windows"], result
    assert "feed_data" in result["profile"] or "data_received" in result["profile"], result["profile"]
    read = result["counters"].get('large_messages_total{outcome="read"}', 0)
    assert 1 <= read <= LARGE_BURST + 1 and result["large_messages_handled"] <= read, result["counters"]
