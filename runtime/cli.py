"""The ``worldstream`` command: serve, render Lyra-style walkthroughs, import/export splats, manage worlds.

``worldstream --help`` lists the commands; ``worldstream COMMAND --help`` their options.
``python -m runtime.cli`` is the same program. User errors (bad files, unknown
worlds, bad options) print one line naming the file and the problem and exit 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_WORLDS = Path("worlds")
EXIT_USER_ERROR = 2


class CliError(Exception):
    """A problem with the command line or its inputs, reported without a traceback."""


# ---------------------------------------------------------------- argument types
def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x360, got {text!r}") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size {w}x{h} must be between 8x8 and 8192x8192")
    return w, h


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _generator_option(text: str) -> tuple[str, str]:
    from runtime.world.generators import parse_option

    try:
        return parse_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _library(args):
    from runtime.world.store import WorldLibrary

    return WorldLibrary(args.worlds)


def _renderer(name: str):
    """The renderer named ``name`` (auto: gsplat on CUDA, else cpu)."""
    from runtime.world.render import create_renderer

    try:
        return create_renderer(name)
    except RuntimeError as e:  # gsplat without CUDA or without the package
        raise CliError(f"--renderer {name}: {e}") from None


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=quiet, file=sys.stderr, dynamic_ncols=True)


def _world_config(name: str, args, caption: str):
    from runtime.world.world import WorldConfig

    options = {"name": name, "seed": args.seed, "caption": caption, "generator": args.generator}
    if getattr(args, "generator_option", None):
        options["generator_options"] = dict(args.generator_option)
    if getattr(args, "keyframe_size", None):
        options["keyframe_width"], options["keyframe_height"] = args.keyframe_size
    try:
        return WorldConfig(**options)
    except ValueError as e:
        raise CliError(str(e)) from None


def _output_file(path: Path, video: bool = False) -> None:
    """Refuse an output file before any work: its folder must exist; a video's suffix must name a
    format we write (``.gif`` is written as GIF, never MP4 under that name)."""
    folder = path.parent
    if not folder.is_dir():
        raise CliError(f"{path}: folder {str(folder)!r} does not exist" if not folder.exists() else f"{path}: {str(folder)!r} is not a folder")
    if video:
        from runtime.world.formats.media import video_format_error

        problem = video_format_error(path)
        if problem is not None:
            raise CliError(f"{path}: {problem}")


def _check_video_size(path: Path, width: int, height: int) -> None:
    if path.suffix.lower() == ".mp4" and (width % 2 or height % 2):
        raise CliError(f"--resolution {width}x{height}: H.264 needs an even width and height")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _when(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


# ---------------------------------------------------------------- commands
def cmd_serve(args) -> int:
    from runtime.app import main as app_main

    argv = list(args.server_args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.worlds_given and "--worlds" not in argv:
        argv = ["--worlds", str(args.worlds)] + argv
    return int(app_main(argv, prog="worldstream serve") or 0)


def cmd_list(args) -> int:
    infos = _library(args).list()
    if args.json:
        print(json.dumps([_info_dict(i) for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no worlds in {Path(args.worlds).absolute()}")
        return 0
    print(f"{'NAME':<24} {'CHUNKS':>7} {'GAUSSIANS':>10} {'FRAMES':>7} {'SIZE':>9}  LAST PLAYED")
    for i in infos:
        if i.error:
            print(f"{i.name:<24} unreadable: {i.error}")
            continue
        print(f"{i.name:<24} {i.chunks:>7} {i.gaussians:>10} {i.frames:>7} {_human_bytes(i.size_bytes):>9}  {_when(i.last_played)}")
    return 0


def _info_dict(i) -> dict:
    return {
        "name": i.name,
        "path": str(i.path),
        "size_bytes": i.size_bytes,
        "chunks": i.chunks,
        "gaussians": i.gaussians,
        "frames": i.frames,
        "created_at": i.created_at,
        "last_played": i.last_played,
        "format_version": i.format_version,
        "generator": i.generator,
        "seed": i.seed,
        "caption": i.caption,
        "far_gaussians": i.far_gaussians,
        "error": i.error,
    }


def cmd_info(args) -> int:
    info = _library(args).info(args.world)
    if args.json:
        print(json.dumps(_info_dict(info), indent=2))
        return 0
    if info.error:
        raise CliError(info.error)
    rows = [
        ("name", info.name),
        ("path", info.path),
        ("size", f"{_human_bytes(info.size_bytes)} ({info.size_bytes} bytes)"),
        ("chunks", info.chunks),
        ("gaussians", info.gaussians),
        ("far field", f"{info.far_gaussians} Gaussians"),
        ("frames", info.frames),
        ("generator", info.generator),
        ("seed", info.seed),
        ("caption", info.caption or "-"),
        ("created", _when(info.created_at)),
        ("last played", _when(info.last_played)),
        ("format", info.format_version),
    ]
    for key, value in rows:
        print(f"{key + ':':<13} {value}")
    return 0


def cmd_export(args) -> int:
    from runtime.world.formats import SplatFormatError, write_splats

    _output_file(args.out)
    t0 = time.perf_counter()
    library = _library(args)
    # The far field (distant surfaces the world draws behind the scene) goes after the scene's
    # Gaussians as ordinary ones: viewers have no background layer (see docs/world.md).
    gaussians = library.load_gaussians(args.world, far=not args.no_far_field)
    if len(gaussians) == 0:
        raise CliError(f"world {args.world!r} has no Gaussians yet; walk it first")
    try:
        size = write_splats(args.out, gaussians, lossless=args.lossless)
    except SplatFormatError:
        raise  # names the file already
    except ValueError as e:
        raise CliError(f"{args.out}: {e}") from None
    far = "" if args.no_far_field else f", far field included: {library.info(args.world).far_gaussians}"
    print(f"wrote {len(gaussians)} Gaussians{far} ({_human_bytes(size)}) to {args.out} in {time.perf_counter() - t0:.2f} s")
    return 0


def cmd_import(args) -> int:
    from runtime.world.formats import read_splats
    from runtime.world.store import check_world_name

    name = check_world_name(args.name)
    library = _library(args)
    if library.exists(name):
        raise CliError(f"a world named {name!r} already exists in {Path(args.worlds).absolute()}; pick another --name")
    t0 = time.perf_counter()
    gaussians = read_splats(args.input, args.max_gaussians)
    config = _world_config(name, args, args.caption)
    try:
        world = library.import_gaussians(name, gaussians, config=config, source_name=f"import:{Path(args.input).name}", renderer=_renderer(args.renderer))
    except BaseException:
        if library.exists(name):  # ours: the name was free above
            library.delete(name)
        raise
    chunks = len(world.scene.snapshot().chunks)
    world.close()
    print(f"imported {len(gaussians)} Gaussians from {args.input} as world {name!r} ({chunks} chunk(s)) in {time.perf_counter() - t0:.2f} s")
    return 0


def _chunk_optimiser(steps: int | None):
    """The gsplat chunk optimiser for ``--optimise-chunks STEPS``, or None when not asked for."""
    if not steps:
        return None
    from runtime.world.keyframes.optimise import ChunkOptimiser

    try:
        return ChunkOptimiser.for_cuda(steps)
    except (RuntimeError, ValueError) as e:  # no CUDA / gsplat, or steps out of range
        raise CliError(f"--optimise-chunks {steps}: {e}") from None


def _open_or_create_world(library, name: str, args, caption: str, start_image, depth_estimator=None):
    kwargs = {"renderer": _renderer(args.renderer), "depth_estimator": depth_estimator,
              "chunk_optimiser": _chunk_optimiser(getattr(args, "optimise_chunks", None))}
    if library.exists(name):
        return library.open(name, **kwargs), False
    return library.create(_world_config(name, args, caption), start_image=start_image, **kwargs), True


def cmd_render(args) -> int:
    from runtime.world.formats.media import VideoWriter, read_image
    from runtime.world.store import slug_world_name
    from runtime.world.movement.trajectory import Captions, is_lyra_length, load_captions, load_trajectory, walk

    if (args.trajectory is None) == (args.preset is None):
        raise CliError("give exactly one of --trajectory FILE or --preset zoom-in|zoom-out")
    _output_file(args.out, video=True)
    start_image = read_image(args.image) if args.image else None
    if start_image is not None:  # a photo's own field of view, when its EXIF records the focal length
        from runtime.world.formats.exif import fov_y_from_exif

        args.image_fov_y = fov_y_from_exif(Path(args.image).read_bytes()[: 1 << 20], start_image.shape[1], start_image.shape[0])
    captions = load_captions(args.captions) if args.captions else Captions(((0, args.caption),))
    trajectory = load_trajectory(args.trajectory, args.pose_scale) if args.trajectory else None
    if trajectory is not None:
        frames = args.frames or len(trajectory)
        if frames > len(trajectory):
            raise CliError(f"--frames {frames}: {args.trajectory} has only {len(trajectory)} poses")
        trajectory = trajectory.first(frames)
        width, height = args.resolution or (trajectory.width, trajectory.height)
    else:
        frames = args.frames or 81
        width, height = args.resolution or (640, 360)
    _check_video_size(args.out, width, height)
    if not is_lyra_length(frames):
        print(f"worldstream: warning: {frames} frames is not of the form 1 + 80k (Lyra's chunking); rendering anyway", file=sys.stderr)

    # Depth sources are checked before any world is made, so a bad one leaves nothing behind.
    start_depth = _read_depth(args.depth) if args.depth and start_image is not None else None
    estimator = _depth_estimator(args.depth_model) if args.depth_model else None
    library = _library(args)
    name = args.world or slug_world_name(Path(args.out).stem)
    world, created = _open_or_create_world(library, name, args, captions.at(0), start_image, estimator)
    failures = _GenerationFailures(world)
    try:
        if created and start_image is not None:
            _seed_start_image(world, start_image, args, trajectory, width, height, start_depth)
        start_image = None  # the world keeps a shrunk copy; the whole picture is not needed while rendering
        if trajectory is None:  # a preset: scale it by the first frame's depth, as Lyra does
            trajectory = _preset_trajectory(world, args.preset, frames, width, height, captions, args)
            failures.check()
        t0 = time.perf_counter()
        with VideoWriter(args.out, width, height, fps=args.fps) as video, _progress(len(trajectory), "render", args.quiet) as bar:
            for rgb in walk(world, trajectory, width, height, captions, fps=args.fps):
                failures.check()
                video.write(rgb)
                bar.update(1)
        elapsed = time.perf_counter() - t0
        chunks = len(world.scene.snapshot().chunks)
    except BaseException:
        world.close()
        if created:  # a failed render leaves no half-made world behind
            library.delete(name)
        raise
    world.close()
    verb = "created" if created else "extended"
    print(f"wrote {len(trajectory)} frames ({width}x{height}) to {args.out} in {elapsed:.1f} s; {verb} world {name!r} ({chunks} chunks)")
    return 0


class _GenerationFailures:
    """Collects a world's failed generation jobs; :meth:`check` raises on the first one,
    so a render whose generator fails exits non-zero instead of writing an empty walk."""

    def __init__(self, world) -> None:
        from runtime.world.world import JobFailed

        self.errors: list[str] = []
        world.subscribe(lambda e: self.errors.append(e.error) if isinstance(e, JobFailed) and not e.cancelled else None)

    def check(self) -> None:
        if self.errors:
            raise CliError(f"generation failed: {self.errors[0]}")


def _seed_start_image(world, image, args, trajectory, width: int, height: int, depth) -> None:
    """Make the start image keyframe 0 at the first camera (the trajectory's, or the origin)."""
    from runtime.world.keyframes.start_frame import seed_world

    fov_y = _preset_fov_y(args)
    w2c = K = None
    if trajectory is not None:
        fov_y = math.radians(args.fov) if args.fov else None
        first = trajectory.cameras(width, height)[0]
        w2c = first.w2c[0]
        K = None if fov_y is not None else first.K[0]
    seed_world(world, image, width, height, fov_y=fov_y, w2c=w2c, K=K, depth=depth)  # logs a line if no depth


def _read_depth(path: Path):
    from runtime.world.depth import DepthMapError, read_depth_map

    try:
        return read_depth_map(path)
    except DepthMapError as e:
        raise CliError(str(e)) from None


def _depth_estimator(model: str):
    from runtime.world.depth import DepthModelMissing, load_depth_estimator

    try:
        return load_depth_estimator(model)
    except DepthModelMissing as e:
        raise CliError(str(e)) from None


def _preset_fov_y(args) -> float:
    """Vertical field of view (radians) of a preset's cameras and of a start image without a
    trajectory: ``--fov``, else the start image's EXIF focal length, else 60 degrees."""
    from runtime.world.movement.trajectory import PRESET_FOV_Y

    if args.fov:
        return math.radians(args.fov)
    return getattr(args, "image_fov_y", None) or PRESET_FOV_Y


def _preset_trajectory(world, preset: str, frames: int, width: int, height: int, captions, args):
    """Generate the first view, then build the zoom preset from its depth."""
    from runtime.world.camera import intrinsics_from_fov
    from runtime.world.movement.trajectory import Trajectory, walk, zoom_trajectory

    fov_y = _preset_fov_y(args)
    K = intrinsics_from_fov(width, height, fov_y)
    origin = Trajectory(np.eye(4, dtype=np.float32)[None], K[None], width, height)
    for _ in walk(world, origin, width, height, captions, fps=args.fps):
        pass
    depth = world.render(origin.cameras()).depth[0]
    try:
        return zoom_trajectory(preset, depth, frames, width, height, fov_y=fov_y, strength=args.strength)
    except ValueError as e:
        raise CliError(str(e)) from None


def cmd_flythrough(args) -> int:
    from runtime.world.camera import Pose
    from runtime.world.formats.media import VideoWriter
    from runtime.world.movement.trajectory import Trajectory, load_trajectory, walk

    if args.path is not None and args.orbit:
        raise CliError("give one of --path FILE or --orbit, not both")
    _output_file(args.out, video=True)
    library = _library(args)
    world = library.open(args.world, read_only=True, renderer=_renderer(args.renderer))
    try:
        if args.path is not None:
            trajectory = load_trajectory(args.path, args.pose_scale)
            if args.frames:
                trajectory = trajectory.first(min(args.frames, len(trajectory)))
            width, height = args.resolution or (trajectory.width, trajectory.height)
        else:
            width, height = args.resolution or (640, 360)
            frames = args.frames or 96
            center = world.spawn_pose().position
            w2c = []
            for k in range(frames):
                yaw = 2.0 * math.pi * k / frames
                offset = args.radius * np.array([math.sin(yaw), 0.0, math.cos(yaw)], np.float32)
                w2c.append(Pose(center + offset, yaw, math.radians(args.pitch)).w2c)
            from runtime.world.camera import intrinsics_from_fov

            K = intrinsics_from_fov(width, height, math.radians(args.fov))
            trajectory = Trajectory(np.stack(w2c), np.broadcast_to(K, (frames, 3, 3)).copy(), width, height)
        _check_video_size(args.out, width, height)
        t0 = time.perf_counter()
        with VideoWriter(args.out, width, height, fps=args.fps) as video, _progress(len(trajectory), "flythrough", args.quiet) as bar:
            for rgb in walk(world, trajectory, width, height, generate=False):
                video.write(rgb)
                bar.update(1)
    finally:
        world.close()
    print(f"wrote {len(trajectory)} frames ({width}x{height}) of world {args.world!r} to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--worlds", type=Path, default=argparse.SUPPRESS, metavar="DIR", help="folder of saved worlds (default ./worlds)"
    )
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    parser = argparse.ArgumentParser(
        prog="worldstream",
        description="Walk through generated 3D worlds: serve them live, render Lyra-style walkthroughs, import and export splats.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "serve",
        help="run the streaming server (options: worldstream serve --help)",
        add_help=False,
        parents=[common],
        description="Runs the server; every option after 'serve' goes to it.",
    )
    p.add_argument("server_args", nargs=argparse.REMAINDER, help="server options (see worldstream serve --help)")
    p.set_defaults(func=cmd_serve)

    def generation_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=0, help="world seed (new worlds; default 0)")
        p.add_argument("--generator", default="procedural", help="generator for new worlds (default procedural)")
        p.add_argument(
            "--generator-option", type=_generator_option, action="append", default=[], metavar="KEY=VALUE",
            help="option for the generator of new worlds, e.g. model=/models/Wan2.1-VACE-1.3B-diffusers (repeatable)",
        )
        p.add_argument("--keyframe-size", type=_size, default=None, metavar="WxH", help="generated keyframe size for new worlds (default 320x180)")
        p.add_argument("--renderer", choices=["auto", "cpu", "gsplat"], default="auto", help="renderer (default auto)")

    p = sub.add_parser("list", help="list saved worlds", parents=[common])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show one saved world", parents=[common])
    p.add_argument("world", help="world name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="export a world's Gaussians as .ply (3DGS), .splat or .spz", parents=[common])
    p.add_argument("world", help="world name")
    p.add_argument("out", type=Path, help="output file: out.ply | out.splat | out.spz")
    p.add_argument("--lossless", action="store_true", help="PLY only: also store exact colours (extra ws_rgb_* properties)")
    p.add_argument(
        "--no-far-field", action="store_true",
        help="leave out the far field (coarse, nearly opaque splats of surfaces 40 m to 5 km away, written after the scene's "
        "by default): for editing the scene alone, or re-importing it without a shell of distant blobs",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="make a new world from a 3DGS .ply (e.g. Lyra's reconstructed_scene.ply), .splat or .spz", parents=[common])
    p.add_argument("input", type=Path, help="input splat file")
    p.add_argument("--name", required=True, help="name of the new world ([a-z0-9][a-z0-9_-]{0,63})")
    p.add_argument("--caption", default="", help="caption used to extend the world past the imported scene")
    p.add_argument(
        "--max-gaussians", type=_positive(int), default=None, metavar="N",
        help="refuse files holding more Gaussians than this (default 10,000,000; each costs 56-236 bytes of memory)",
    )
    generation_options(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "render",
        help="generate a world along a Lyra trajectory (or zoom preset) and write the walkthrough as MP4",
        parents=[common],
    )
    p.add_argument("out", type=Path, help="output video: out.mp4 (H.264) or out.gif (256 fixed colours)")
    p.add_argument("--image", type=Path, default=None, help="start image (Lyra's first_frame.png)")
    p.add_argument("--trajectory", type=Path, default=None, help="Lyra trajectory.npz (w2c, intrinsics, image_height, image_width)")
    p.add_argument("--preset", choices=["zoom-in", "zoom-out"], default=None, help="a zoom preset instead of a trajectory file")
    p.add_argument("--strength", type=_positive(float), default=None, help="zoom distance in first-frame 25th-percentile depths (default 0.5 in, 1.5 out)")
    p.add_argument("--depth", type=Path, default=None, help="depth map of the start image: 16-bit PNG in millimetres (0 = sky) or .npy in metres")
    p.add_argument("--depth-model", default=None, metavar="PATH", help="Depth Anything-class model folder (transformers format): depth for the start image and for generators that make RGB only")
    p.add_argument("--fov", type=_positive(float), default=None, help="vertical field of view of the start image in degrees (default: the trajectory's first camera's, else the image's EXIF focal length, else 60)")
    p.add_argument("--captions", type=Path, default=None, help='Lyra captions.json ({"0": "...", "81": "..."})')
    p.add_argument("--caption", default="", help="one caption for the whole walk (when no --captions)")
    p.add_argument("--frames", type=_positive(int), default=None, help="frames to render (default: all poses; Lyra uses 1 + 80k)")
    p.add_argument("--pose-scale", type=_positive(float), default=1.1, help="multiply trajectory translations (default 1.1, as Lyra)")
    p.add_argument("--resolution", type=_size, default=None, metavar="WxH", help="video size (default: the trajectory's image size)")
    p.add_argument("--fps", type=_positive(float), default=16.0, help="video frame rate (default 16, as Lyra)")
    p.add_argument("--world", default=None, help="world to create or extend (default: named after the output file)")
    p.add_argument("--optimise-chunks", type=_positive(int), default=None, metavar="STEPS",
                   help="fit every new chunk to its keyframes with STEPS gsplat steps (about 100; needs CUDA and gsplat; default off)")
    generation_options(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("flythrough", help="render a video along a path through an existing world (no generation)", parents=[common])
    p.add_argument("world", help="world name")
    p.add_argument("out", type=Path, help="output video: out.mp4 (H.264) or out.gif (256 fixed colours)")
    p.add_argument("--path", type=Path, default=None, help="camera path as a Lyra-format trajectory.npz")
    p.add_argument("--orbit", action="store_true", help="turn a full circle around the spawn point (the default when no --path)")
    p.add_argument("--radius", type=float, default=1.0, help="orbit radius in metres (default 1)")
    p.add_argument("--pitch", type=float, default=0.0, help="orbit pitch in degrees, positive looks up (default 0)")
    p.add_argument("--fov", type=_positive(float), default=60.0, help="orbit vertical field of view in degrees (default 60)")
    p.add_argument("--frames", type=_positive(int), default=None, help="frames (orbit default 96; path default all)")
    p.add_argument("--pose-scale", type=_positive(float), default=1.0, help="multiply path translations (default 1)")
    p.add_argument("--resolution", type=_size, default=None, metavar="WxH", help="video size (default: the path's, or 640x360)")
    p.add_argument("--fps", type=_positive(float), default=30.0, help="video frame rate (default 30)")
    p.add_argument("--renderer", choices=["auto", "cpu", "gsplat"], default="auto", help="renderer (default auto)")
    p.set_defaults(func=cmd_flythrough)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from runtime.world.formats.errors import SplatFormatError
    from runtime.world.store.errors import WorldStoreError
    from runtime.world.movement.trajectory import TrajectoryError

    return (CliError, WorldStoreError, SplatFormatError, TrajectoryError, FileNotFoundError, PermissionError, IsADirectoryError)


def _split_serve(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """``[global options] serve [server options]`` -> (ours, the server's); None for other commands.

    argparse cannot hand options like ``--help`` after a sub-command to another
    program, so everything after ``serve`` is split off before parsing.
    """
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "serve":
            return argv[: i + 1], argv[i + 1 :]
        if token == "--worlds":
            i += 2
        elif token.startswith("--worlds=") or token in ("-q", "--quiet"):
            i += 1
        else:
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    split = _split_serve(argv)
    if split is not None:
        args = parser.parse_args(split[0])
        args.server_args = split[1]
    else:
        args = parser.parse_args(argv)
    args.worlds_given = hasattr(args, "worlds")
    if not args.worlds_given:
        args.worlds = DEFAULT_WORLDS
    if not hasattr(args, "quiet"):
        args.quiet = False
    if args.command != "serve":
        logging.basicConfig(level=logging.WARNING, format="worldstream: %(levelname)s: %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        message = str(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) not in message:
            message = f"{e.filename}: {e.strerror}"
        print(f"worldstream: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("worldstream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
