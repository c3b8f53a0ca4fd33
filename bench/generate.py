"""Benchmark the wan-vace generator: routing and denoising costs, and what they allow.

    .venv/bin/python -m bench.generate                      # CPU: tiny model per step, routing per frame
    .venv/bin/python -m bench.generate --full 1.3B,14B      # GPU: random-weight Wan VACE at 480x832
    .venv/bin/python -m bench.generate --full 14B --frames 81 --json out.json

**Tiny (any machine).** The tiny random-weight Wan VACE of the tests (``bench.models``) at
32x32 and 64x64: milliseconds per denoising step (from the pipeline's step callbacks) and per
job. Routing: the scene rendered by the CPU renderer plus 5 memory frames forward-warped into
each path frame at 320x180 and 832x480, milliseconds per frame.

**Full size (CUDA).** Wan 2.1 VACE 1.3B and 14B built from their published configs with
random weights (speed does not depend on weight values), bf16 transformer, float32 VAE, no
text encoder (random umT5-sized prompt embeddings: the text encoder runs once per caption).
Each (model, frames) is timed with 1 and 2 denoising steps: the difference is one step, the
rest (VAE encode + decode, set-up) is fixed, so a job of ``s`` steps takes ``fixed + s x step``.
Rows give 35 steps with CFG 5 (two transformer passes per step, as Lyra 2 runs) and 4 steps
without CFG (a distillation LoRA), peak GPU memory, and the walking speed a job supports:
a path of ``F`` frames advances known space by ``F - 1`` camera steps of ``--step-m`` metres
(default 0.1 m, about Lyra's trajectories), so a player walking slower than
``(F - 1) x step / seconds`` never reaches unfilled space.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bench.common import describe_machine, format_table, write_json

STEP_M = 0.1


def tiny_rows(repeats: int) -> list[dict]:
    import torch

    from bench.models import tiny_vace_pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipe = tiny_vace_pipeline()
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for size, frames in ((32, 9), (64, 17)):
        for cfg in (1.0, 5.0):
            step_times, job_times = [], []
            for _ in range(repeats):
                marks = []
                video = np.full((1, frames, size, size, 3), 0.5, np.float32)
                mask = np.ones_like(video)
                t0 = time.perf_counter()
                pipe(prompt="a stone castle", video=video, mask=mask, height=size, width=size, num_frames=frames,
                     num_inference_steps=4, guidance_scale=cfg, output_type="np",
                     callback_on_step_end=lambda p, i, t, k: (marks.append(time.perf_counter()), k)[1])
                job_times.append(time.perf_counter() - t0)
                step_times += list(np.diff(marks))
            rows.append({"what": f"tiny {size}x{size} x {frames} frames, CFG {cfg:g}", "step_ms": 1e3 * float(np.median(step_times)),
                         "job_s_4_steps": float(np.median(job_times))})
    return rows


def routing_rows(repeats: int) -> list[dict]:
    from runtime.world.camera import Pose, intrinsics_from_fov
    from runtime.world.generators.diffusion import camera_path, route, start_pose
    from runtime.world.keyframes.frames import Frame
    from runtime.world.keyframes.start_frame import lift_start_frame, make_start_frame
    from runtime.world.render import create_renderer
    from runtime.world.scene import ChunkSource, Scene
    from runtime.world.sky import Sky

    rng = np.random.default_rng(0)
    # A scene and memory: five keyframes of a textured ground and wall around the origin.
    memory = []
    scene = Scene()
    for i in range(5):
        W, H = 320, 180
        v, u = np.mgrid[0:H, 0:W]
        depth = np.where(v > 70, 1.7 * 150 / np.maximum(v - 70, 1), 12.0).astype(np.float32)
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        pose = Pose(np.zeros(3, np.float32), i * 0.5, 0.0)
        K = intrinsics_from_fov(W, H, math.radians(75))
        memory.append(Frame(i, rgb, depth, pose.w2c, K))
        frame = make_start_frame(rgb, W, H, w2c=pose.w2c, K=K, depth=depth)
        scene.append(lift_start_frame(frame), ChunkSource(i))
    renderer = create_renderer("cpu")
    sky = Sky()

    def draw(cams):
        return renderer.render(scene.snapshot(), cams, sky)

    rows = []
    for W, H in ((320, 180), (832, 480)):
        # Out on the edge of what the memory saw: part of every path frame is known.
        target = Pose(np.array([2.0, 0.0, 4.0], np.float32), 2.6, 0.0).camera(W, H, math.radians(75))
        path = camera_path(start_pose(target, memory), target, 17)
        route(path.cameras[:2], memory, draw)  # compile and warm
        for with_scene in (False, True):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                cond = route(path.cameras, memory, draw if with_scene else None)
                times.append(time.perf_counter() - t0)
            rows.append({"what": f"routing {W}x{H}, 5 memory frames{' + scene render' if with_scene else ''}",
                         "frame_ms": 1e3 * float(np.median(times)) / len(path.cameras), "known": float(cond.known.mean())})
    return rows


def full_rows(sizes: list[str], frames_list: list[int], step_m: float) -> list[dict]:
    import torch

    from bench.models import WAN_TEXT_DIM, full_size_vace_pipeline

    H, W = 480, 832
    rows = []
    for size in sizes:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        pipe = full_size_vace_pipeline(size)
        pipe.set_progress_bar_config(disable=True)
        embeds = torch.randn(1, 512, WAN_TEXT_DIM, device="cuda", dtype=torch.bfloat16)
        weights_gb = torch.cuda.memory_allocated() / 2**30
        for frames in frames_list:
            video = np.full((1, frames, H, W, 3), 0.5, np.float32)
            mask = np.ones_like(video)
            mask[:, 0] = 0.0  # the first frame kept, as a path from known space starts

            def job(steps: int, cfg: float) -> float:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                pipe(video=video, mask=mask, prompt_embeds=embeds, negative_prompt_embeds=embeds, height=H, width=W,
                     num_frames=frames, num_inference_steps=steps, guidance_scale=cfg, output_type="np")
                torch.cuda.synchronize()
                return time.perf_counter() - t0

            job(1, 1.0)  # warm-up: kernels, allocator
            torch.cuda.reset_peak_memory_stats()
            for cfg, steps in ((5.0, 35), (1.0, 4)):
                one, two = job(1, cfg), job(2, cfg)
                step = two - one
                fixed = max(one - step, 0.0)
                seconds = fixed + steps * step
                rows.append({
                    "what": f"{size} 480x832 x {frames}", "steps": steps, "cfg": cfg, "step_s": step, "fixed_s": fixed,
                    "job_s": seconds, "peak_gb": torch.cuda.max_memory_allocated() / 2**30, "weights_gb": weights_gb,
                    "walk_m_s": (frames - 1) * step_m / seconds,
                })
        del pipe
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", default=None, help="comma-separated full sizes to time on CUDA: 1.3B,14B")
    ap.add_argument("--frames", default="17,33,81", help="full-size path lengths (4k + 1)")
    ap.add_argument("--step-m", type=float, default=STEP_M, help="metres between path frames, for the walking speed")
    ap.add_argument("--repeats", type=int, default=3, help="tiny/routing repeats (median)")
    ap.add_argument("--parts", default="tiny,routing", help="CPU parts to run: tiny, routing (default both)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    print(describe_machine())
    payload = {}
    if args.full:
        rows = full_rows([s.strip() for s in args.full.split(",")], [int(f) for f in args.frames.split(",")], args.step_m)
        print(format_table(rows, [("what", "model, frames"), ("steps", "steps"), ("cfg", "CFG"), ("step_s", "s/step"),
                                  ("fixed_s", "fixed s"), ("job_s", "s/job"), ("peak_gb", "peak GiB"),
                                  ("walk_m_s", "walk m/s")]))
        payload["full"] = rows
    else:
        parts = {p.strip() for p in args.parts.split(",")}
        if "tiny" in parts:
            payload["tiny"] = tiny_rows(args.repeats)
            print(format_table(payload["tiny"], [("what", "tiny Wan VACE"), ("step_ms", "ms/step"), ("job_s_4_steps", "s/job (4 steps)")]))
        if "routing" in parts:
            payload["routing"] = routing_rows(args.repeats)
            print(format_table(payload["routing"], [("what", "routing"), ("frame_ms", "ms/frame"), ("known", "known fraction")]))
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
