"""What the background threads' scheduling class costs generation when streaming fills the CPU.

Runs ``bench.stream`` rounds (N players walking in a new world, ``--url`` of a server started
here) with ``WORLDSTREAM_BACKGROUND_POLICY`` set to each of ``--policies`` in turn, interleaved
``--repeats`` times, and reports per run: generation jobs finished, the background threads'
CPU time and their wait for a CPU, the other threads' (streaming) the same, sent and received
fps and the largest frame gap. Background threads are the server's threads with a nice value
above its main thread's or in ``SCHED_IDLE`` (``runtime/world/thread_priority.py``: planning,
generation, the store writer), read from ``/proc/<pid>/task/*/stat`` and ``schedstat``.

Jobs finished and the background CPU are what ``SCHED_IDLE`` can take away; compare runs of one
invocation (the machine's load changes between invocations). Example (CPU, 2 cores)::

    .venv/bin/python -m bench.background_policy --players 4 --duration 20 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import describe_machine, format_table, write_json
from bench.stream import start_server
from runtime.world.thread_priority import POLICY_ENV

SCHED_IDLE = 5  # Linux's policy number, as /proc/<pid>/stat's field 41 gives it


def thread_times(pid: int) -> dict[str, tuple[str, int, int]]:
    """Per thread of ``pid``: (``background`` or ``streaming``, ns run, ns waited for a CPU)."""
    with open(f"/proc/{pid}/stat") as f:
        main_nice = int(f.read().rsplit(")", 1)[1].split()[16])
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ran, waited, _ = map(int, f.read().split())
        except OSError:  # the thread ended
            continue
        background = int(fields[16]) > main_nice or int(fields[38]) == SCHED_IDLE
        out[tid] = ("background" if background else "streaming", ran, waited)
    return out


def one_run(policy: str, players: int, duration: float, workdir: Path) -> dict:
    saved = os.environ.get(POLICY_ENV)
    os.environ[POLICY_ENV] = policy  # the server inherits it
    try:
        server_args = argparse.Namespace(renderer="cpu", generator="procedural", codec="h264", resolution="320x180", fps=30,
                                         bitrate=None, crf=None, server_cores=None)
        proc, url = start_server(server_args, workdir)
    finally:
        if saved is None:
            del os.environ[POLICY_ENV]
        else:
            os.environ[POLICY_ENV] = saved
    try:
        before, t0 = thread_times(proc.pid), time.monotonic()
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, "-m", "bench.stream", "--url", url, "--players", str(players), "--duration", str(duration),
                               "--json", str(workdir / "stream.json")], capture_output=True, text=True)
        after, wall = thread_times(proc.pid), time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    sums = {"background": [0, 0], "streaming": [0, 0]}
    for tid, (group, ran, waited) in after.items():
        _, ran0, waited0 = before.get(tid, (group, 0, 0))
        sums[group][0] += ran - ran0
        sums[group][1] += waited - waited0
    if done.returncode != 0 or not (workdir / "stream.json").exists():
        raise SystemExit(f"bench.stream failed ({policy}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    row = json.loads((workdir / "stream.json").read_text())["rows"][0]
    return {
        "policy": policy, "load": round(load, 1), "wall_s": round(wall, 1), "jobs": row["jobs_done"],
        "background_ran_s": round(sums["background"][0] / 1e9, 2), "background_waited_s": round(sums["background"][1] / 1e9, 2),
        "streaming_ran_s": round(sums["streaming"][0] / 1e9, 2), "streaming_waited_s": round(sums["streaming"][1] / 1e9, 2),
        "sent_fps": row["sent_fps"], "recv_fps": row["recv_fps"], "max_gap_s": row["max_gap_s"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", default="normal,idle", help="values of WORLDSTREAM_BACKGROUND_POLICY, in turn (default normal,idle)")
    p.add_argument("--players", type=int, default=4)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of driving per run (default 20)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    print(describe_machine())
    rows = []
    for _ in range(args.repeats):
        for policy in [x.strip() for x in args.policies.split(",") if x.strip()]:
            with tempfile.TemporaryDirectory(prefix="background-policy-") as tmp:
                rows.append(one_run(policy, args.players, args.duration, Path(tmp)))
            print("  " + json.dumps(rows[-1]), flush=True)
    print()
    print(format_table(rows, [("policy", "policy"), ("load", "load"), ("jobs", "jobs done"), ("background_ran_s", "background ran s"),
                              ("background_waited_s", "background waited s"), ("streaming_ran_s", "streaming ran s"),
                              ("streaming_waited_s", "streaming waited s"), ("sent_fps", "sent fps"), ("recv_fps", "recv fps"),
                              ("max_gap_s", "largest gap s")]))
    write_json(args.json, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
