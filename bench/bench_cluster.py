"""Is the batch queue faster on a Ray cluster?  12 int8 jobs, the local queue against a local 2-worker Ray instance.

The local queue runs its jobs one after another in this process
(``mono_quant_core.jobs.run_job``); the cluster runs the same 12 jobs through
``RayCluster("local", num_cpus=2).run_job``, two at a time (its default
concurrency: one job per free CPU), each in a Ray worker process with one torch
thread.  Reported: the wall time of each, the throughput ratio (local time /
cluster time; also against the same sequential queue with one torch thread, which
separates "two jobs at once" from "no thread oversubscription"), the overhead
per job (a job's time on the cluster, less the same job's time run locally with
one thread, averaged), and the start of the Ray instance, which is paid once.

The jobs are the bundled demos (resources/demo): the digits CNN and the small
transformer, int8 static with 40 calibration samples, six of each.  Every
remote output is checked against the local one (tensors bit for bit), so the
benchmark also proves the two runs did the same work.

Usage: ``python bench/bench_cluster.py [--jobs 12] [--workers 2]`` (about a
minute on 2 cores).  Measure on a quiet machine; the figures in
docs/benchmarks.md say how quiet theirs was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from mono_quant_core.cluster import RayCluster  # noqa: E402
from mono_quant_core.config import QuantConfig  # noqa: E402
from mono_quant_core.jobs import Job, run_job  # noqa: E402

DEMOS = ROOT / "resources" / "demo"


def jobs(folder: Path, count: int) -> list[Job]:
    """``count`` int8 static jobs alternating between the two demos, each writing its own file."""
    made = []
    for i in range(count):
        demo = DEMOS / ("cnn" if i % 2 == 0 else "transformer")
        made.append(
            Job(
                script=str(demo / "model.py"),
                checkpoint=str(demo / "model.safetensors"),
                output=str(folder / f"job{i:02d}.{demo.name}.safetensors"),
                config=QuantConfig(dtype="int8", mode="static"),
                calibration_folder=str(demo / "calibration"),
                samples=40,
                seed=i,
            )
        )
    return made


def timed(fn, *args):
    started = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        (work / "local").mkdir()
        (work / "ray").mkdir()
        local_jobs = jobs(work / "local", args.jobs)
        ray_jobs = jobs(work / "ray", args.jobs)
        run_job(local_jobs[0].replace(output=str(work / "warm.safetensors")))  # imports, script cache

        print(f"torch threads here: {torch.get_num_threads()}; {os.cpu_count()} CPUs")
        local_times = [timed(run_job, job)[1] for job in local_jobs]
        local_total = sum(local_times)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what one Ray worker gets: the reference for the per-job overhead
        single_times = [timed(run_job, job.replace(output=str(work / "single.safetensors")))[1] for job in local_jobs]
        torch.set_num_threads(threads)

        cluster = RayCluster("local", num_cpus=args.workers)
        _, start_s = timed(cluster.connect)
        try:
            concurrency = cluster.default_concurrency()
            warm = [
                job.replace(output=str(work / f"warm{i}.safetensors")) for i, job in enumerate(ray_jobs[:concurrency])
            ]
            with ThreadPoolExecutor(concurrency) as pool:  # each worker imports torch once
                list(pool.map(cluster.run_job, warm))

            def remote(job: Job) -> float:
                return timed(cluster.run_job, job)[1]

            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                remote_times = list(pool.map(remote, ray_jobs))
            cluster_total = time.perf_counter() - started
        finally:
            cluster.close()

        for a, b in zip(local_jobs, ray_jobs, strict=True):
            x, y = load_file(a.output), load_file(b.output)
            assert sorted(x) == sorted(y) and all(torch.equal(x[k], y[k]) for k in x), b.output

        overhead = statistics.mean(r - s for r, s in zip(remote_times, single_times, strict=True))
        print(f"jobs: {args.jobs} int8 static (demo CNN and transformer, 40 calibration samples)")
        print(
            f"local queue (sequential, {threads} torch threads): {local_total:6.2f} s  "
            f"({statistics.mean(local_times):.3f} s per job)"
        )
        print(f"one job with 1 torch thread, locally:         {statistics.mean(single_times):.3f} s per job")
        print(
            f"Ray, local instance with {args.workers} workers, {concurrency} at once: {cluster_total:6.2f} s  "
            f"({statistics.mean(remote_times):.3f} s per job, as the caller waits)"
        )
        print(f"throughput ratio (local queue / Ray):            {local_total / cluster_total:.2f}x")
        print(f"throughput ratio (1-thread sequential / Ray):    {sum(single_times) / cluster_total:.2f}x")
        print(f"overhead per job on Ray:         {overhead * 1000:.0f} ms (remote job time - 1-thread local time)")
        print(f"starting the Ray instance:       {start_s:.2f} s (once)")
        print("outputs: bit-identical to the local queue's")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
