"""A plate segmented in one process, on 2 local dask workers, on a dask cluster; killed and resumed.

    python benchmarks/plate.py [--wells 96] [--fields 4] [--side 512] [--model phase-cells]

A synthetic plate (``core.synth.phase_culture``, ``A01_s1.tif`` ... one
``side``² 16-bit field each) is segmented by ``cultureseg segment --table``,
each time in a fresh process and a fresh ``--out``, with the object size given
(``--diameter``, so every run does the same work per field):

1. ``--workers 1``: one field after the other in one process (the baseline);
   resident memory of the process sampled every 0.2 s, and its mean over the
   first and the last 10 % of the fields' time compared (a leak grows it);
2. ``--workers 2``: two worker processes of a local dask cluster, one torch
   thread each; the speed-up over 1;
3. ``--scheduler ADDRESS``: the same two workers, started beforehand as a
   ``distributed.LocalCluster`` and reached by its address (a user's cluster);
4. ``--workers 1`` killed with SIGKILL when about half the fields are done,
   then run again with ``--resume``: fields lost (done before the kill and
   missing after), fields computed twice (done before the kill and written
   again), and whether every output equals run 1's byte for byte.

Results: ``benchmarks/results/plate.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ".cultureseg-fields"


def make_plate(folder: Path, wells: int, fields: int, side: int) -> list[str]:
    import tifffile

    from napari_cultureseg.core.synth import phase_culture

    rows, cols = "ABCDEFGH", 12
    names = []
    for w in range(wells):
        well = f"{rows[w // cols]}{w % cols + 1:02d}"
        for f in range(fields):
            image, _ = phase_culture((side, side), seed=w * fields + f, n_cells=side // 10)
            name = f"{well}_s{f + 1}.tif"
            tifffile.imwrite(folder / name, image)
            names.append(name)
    return names


def _cmd(plate: Path, out: Path, model: str, diameter: str, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "napari_cultureseg.cli",
        "segment",
        str(plate),
        "--out",
        str(out),
        "--model",
        model,
        "--diameter",
        diameter,
        "--table",
        "--quiet",
        *extra,
    ]


def _done(out: Path) -> dict[str, int]:
    """Finished fields: stem -> mtime (ns) of its record."""
    got = {}
    for rec in (out / RECORDS).glob("*.json") if (out / RECORDS).is_dir() else ():
        try:
            if json.loads(rec.read_text()).get("done"):
                got[rec.stem] = rec.stat().st_mtime_ns
        except (OSError, ValueError):
            pass
    return got


def _digests(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(out.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def run(cmd: list[str], out: Path, n_fields: int, *, sample_rss: bool = False) -> dict:
    """One run: seconds, fields/s, and (``sample_rss``) resident memory over time."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = []  # (seconds, fields done, rss of the process and its children, MB)
    stop = threading.Event()

    def watch():
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                rss = p.memory_info().rss + sum(
                    c.memory_info().rss for c in p.children(recursive=True)
                )
            except psutil.Error:
                break
            samples.append((time.perf_counter() - t0, len(_done(out)), rss / 2**20))
            stop.wait(0.2)

    th = threading.Thread(target=watch, daemon=True)
    if sample_rss:
        th.start()
    err = proc.communicate()[1]
    stop.set()
    seconds = time.perf_counter() - t0
    res = {
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "fields_per_second": round(n_fields / seconds, 3),
        "error": err[-600:] if proc.returncode else "",
    }
    if sample_rss and samples:
        first = [m for _, d, m in samples if d <= 0.1 * n_fields and d > 0] or [samples[0][2]]
        last = [m for _, d, m in samples if d >= 0.9 * n_fields]
        res["rss_mb_first_10pct"] = round(sum(first) / len(first), 1)
        res["rss_mb_last_10pct"] = round(sum(last) / len(last), 1) if last else None
        res["rss_mb_peak"] = round(max(m for _, _, m in samples), 1)
    return res


def killed_and_resumed(plate: Path, out: Path, model: str, diameter: str, n: int) -> dict:
    cmd = _cmd(plate, out, model, diameter)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while len(_done(out)) < n // 2 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _done(out)
    t0 = time.perf_counter()
    r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    after = _done(out)
    return {
        "done_at_kill": len(before),
        "resume_exit_code": r.returncode,
        "resume_seconds": round(time.perf_counter() - t0, 1),
        "fields_lost": sum(1 for s in before if s not in after),
        "fields_recomputed": sum(1 for s, t in before.items() if after.get(s) != t),
        "fields_done_after": len(after),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wells", type=int, default=96)
    ap.add_argument("--fields", type=int, default=4)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--model", default="phase-cells")
    ap.add_argument("--diameter", default="40", help="object diameter given to every run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "plate.json"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        tmp = Path(tmp)
        plate = tmp / "plate"
        plate.mkdir()
        n = len(make_plate(plate, args.wells, args.fields, args.side))
        print(f"plate: {args.wells} wells x {args.fields} fields of {args.side}^2 = {n} fields")
        res: dict = {
            "plate": {"wells": args.wells, "fields": args.fields, "side": args.side, "n": n},
            "model": args.model,
            "cpu_count": os.cpu_count(),
        }
        a = (plate, tmp / "one", args.model, args.diameter)
        res["workers_1"] = run(_cmd(*a, "--workers", "1"), tmp / "one", n, sample_rss=True)
        print("1 worker", res["workers_1"])
        b = (plate, tmp / "two", args.model, args.diameter)
        res["workers_2"] = run(_cmd(*b, "--workers", "2"), tmp / "two", n)
        print("2 workers", res["workers_2"])
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            c = (plate, tmp / "cluster", args.model, args.diameter)
            cmd = _cmd(*c, "--scheduler", cluster.scheduler_address, "--threads", "1")
            res["scheduler"] = run(cmd, tmp / "cluster", n)
        print("scheduler", res["scheduler"])
        res["speedup_2_over_1"] = round(
            res["workers_1"]["seconds"] / res["workers_2"]["seconds"], 2
        )
        res["kill_resume"] = killed_and_resumed(plate, tmp / "killed", args.model, args.diameter, n)
        one = _digests(tmp / "one")
        res["kill_resume"]["outputs_equal_uninterrupted"] = _digests(tmp / "killed") == one
        res["two_workers_equal_one"] = _digests(tmp / "two") == one
        res["scheduler_equal_one"] = _digests(tmp / "cluster") == one
        print("kill/resume", res["kill_resume"])
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
