"""Jobs on a private local Ray instance (127.0.0.1 only): the same files as local runs, retries, cancel, errors.

One instance (2 CPUs) is started for the module and stopped at its end.  Each
remote output is compared with a local ``run_job`` of the same job: every tensor
bit for bit, the metadata equal except the run's timings (``report.*_s``) and the
metadata's own hash, which covers them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_jobs import MODEL_SCRIPT

from mono_quant_core.cluster import ClusterError, ClusterInfo, RayCluster, check_cluster
from mono_quant_core.config import QuantConfig
from mono_quant_core.errors import Cancelled, ScriptError
from mono_quant_core.jobs import Job, run_job
from mono_quant_core.progress import CancelToken

MODEL = (
    MODEL_SCRIPT
    + """

def evaluate(model):
    # A task metric: agreement with a fixed labelling of fixed inputs.
    import torch

    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((model(x).argmax(1) == (x[:, :4].argmax(1))).float().mean())
"""
)

#: Kills its own worker process the first time it is imported (a marker file remembers).
KILL_ONCE = """\
import os
import signal

_MARKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "killed-once")
if not os.path.exists(_MARKER):
    open(_MARKER, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
"""

KILL_ALWAYS = """\
import os
import signal

os.kill(os.getpid(), signal.SIGKILL)
"""

SLOW = """\
import time

time.sleep(60)
"""


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    c = RayCluster("local", num_cpus=2, retries=1)
    c.connect()
    yield c
    c.close()


def write_project(root: Path, script: str = MODEL, name: str = "model.py") -> Path:
    """A model script, its checkpoint and 10 calibration tensors in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(script, encoding="utf-8")
    if not (root / "ckpt.pt").exists():
        g = torch.Generator().manual_seed(0)
        state = {
            "fc1.weight": torch.randn(16, 16, generator=g) * 0.3,
            "fc1.bias": torch.randn(16, generator=g),
            "fc2.weight": torch.randn(4, 16, generator=g) * 0.3,
            "fc2.bias": torch.randn(4, generator=g),
        }
        torch.save(state, root / "ckpt.pt")
        (root / "calib").mkdir()
        for i in range(10):
            torch.save(torch.randn(4, 16, generator=g), root / "calib" / f"x{i}.pt")
    return root


def make_job(
    root: Path, out: str, script: str = "model.py", report: bool = False, shard: str | None = None, **config
) -> Job:
    static = config.get("mode") == "static"
    return Job(
        script=str(root / script),
        checkpoint=str(root / "ckpt.pt"),
        output=str(root / out),
        config=QuantConfig(**config),
        calibration_folder=str(root / "calib"),
        samples=10 if static else None,
        report_path=str(root / (out + ".json")) if report else None,
        max_shard_size=shard,
    )


def read_output(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and mono-quant metadata of a .safetensors output (every shard of a sharded one)."""
    if path.endswith(".index.json"):
        index = json.loads(Path(path).read_text())
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(read_output(os.path.join(os.path.dirname(path), shard))[0])
        return tensors, json.loads(index["metadata"]["mono_quant"]) if "metadata" in index else index
    if path.endswith(".pt"):
        data = torch.load(path, weights_only=True)
        return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}, {}
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
        return tensors, json.loads((f.metadata() or {})["mono_quant"])


def without_timings(meta: dict) -> dict:
    """The metadata less what differs between two runs of one job: timings and the hash that covers them."""
    meta = dict(meta)
    meta.pop("content_hash", None)
    if isinstance(meta.get("report"), dict):
        meta["report"] = {k: v for k, v in meta["report"].items() if not k.endswith("_s")}
    return meta


def assert_same_output(remote_path: str, local_path: str) -> None:
    remote, remote_meta = read_output(remote_path)
    local, local_meta = read_output(local_path)
    assert sorted(remote) == sorted(local)
    for name in local:
        assert remote[name].dtype == local[name].dtype, name
        assert torch.equal(remote[name], local[name]), name
    assert without_timings(remote_meta) == without_timings(local_meta)


JOBS = [
    ("a.safetensors", {}),
    ("b.safetensors", {"mode": "static"}),
    ("c.safetensors", {"dtype": "int4", "mode": "weight-only", "granularity": "per-group", "group_size": 8}),
    ("d.pt", {"mode": "static", "report": True}),
    ("e.safetensors", {"shard": "1KB"}),
    ("f.safetensors", {"dtype": "fp16", "mode": "weight-only"}),
]


def test_six_jobs_write_what_local_runs_write(cluster, tmp_path):
    root = write_project(tmp_path / "p")
    local_root = tmp_path / "local"
    local_root.mkdir()
    for ship in (False, True):  # first the shared filesystem, then inputs shipped through the object store
        cluster.ship_files = ship
        jobs = [make_job(root, f"{ship}-{out}", **settings) for out, settings in JOBS]
        events: dict[str, list[tuple[str, str]]] = {job.output: [] for job in jobs}
        progress: dict[str, list[tuple[int, int, str]]] = {job.output: [] for job in jobs}
        threads: dict[str, set[int]] = {job.output: set() for job in jobs}

        def remote_run(job: Job, events=events, progress=progress, threads=threads):
            def on_event(what: str, line: str, job: Job = job) -> None:
                threads[job.output].add(threading.get_ident())
                events[job.output].append((what, line))

            def on_progress(done: int, total: int, message: str, job: Job = job) -> None:
                threads[job.output].add(threading.get_ident())
                progress[job.output].append((done, total, message))

            return cluster.run_job(job, progress=on_progress, on_event=on_event), threading.get_ident()

        with ThreadPoolExecutor(max_workers=cluster.default_concurrency()) as pool:
            outcomes = list(pool.map(remote_run, jobs))
        for job, (outcome, caller_thread) in zip(jobs, outcomes, strict=True):
            local = run_job(
                job.replace(
                    output=str(local_root / os.path.basename(job.output)),
                    report_path=None if job.report_path is None else str(local_root / "r.json"),
                )
            )
            assert outcome.output.startswith(str(root))
            assert os.path.exists(outcome.output)
            assert abs(outcome.file_bytes - local.file_bytes) < 64  # the timings' digits in the metadata
            assert outcome.report.output_sqnr_db == local.report.output_sqnr_db
            if outcome.output.endswith((".safetensors", ".index.json")):
                assert_same_output(outcome.output, local.output)
            else:  # .pt: the same tensors, and the same bytes apart from the metadata's timings
                remote_t, _ = read_output(outcome.output)
                local_t, _ = read_output(local.output)
                assert all(torch.equal(remote_t[k], local_t[k]) for k in local_t) and sorted(remote_t) == sorted(
                    local_t
                )
            if job.report_path is not None:
                remote_report = json.loads(Path(job.report_path).read_text())
                local_report = json.loads((local_root / "r.json").read_text())
                assert {k: v for k, v in remote_report.items() if not k.endswith("_s")} == {
                    k: v for k, v in local_report.items() if not k.endswith("_s")
                }
            kinds = [kind for kind, _ in events[job.output]]
            assert kinds[0] == "host" and events[job.output][0][1]
            logs = [text for kind, text in events[job.output] if kind == "log"]
            assert any(("shipped" in text) == ship for text in logs), logs
            assert progress[job.output] and progress[job.output][-1][0] == progress[job.output][-1][1] > 0
            assert threads[job.output] == {caller_thread}  # callbacks run on the thread that called run_job
        assert not [p for p in os.listdir(root) if p.endswith(".tmp")]  # no temporary file left beside outputs
    cluster.ship_files = False


def test_a_killed_worker_is_retried_and_the_job_succeeds(cluster, tmp_path):
    root = write_project(tmp_path, KILL_ONCE + MODEL, "dies_once.py")
    events: list[tuple[str, str]] = []
    outcome = cluster.run_job(
        make_job(root, "out.safetensors", "dies_once.py"), on_event=lambda k, t: events.append((k, t))
    )
    assert (root / "killed-once").exists()
    retries = [text for kind, text in events if kind == "retry"]
    assert len(retries) == 1 and "died" in retries[0]
    kinds = [kind for kind, _ in events]
    # The second worker's host arrives after the retry (the first one's may not: it can die before
    # its "host" event is delivered).
    assert "host" in kinds[kinds.index("retry") :]
    local = run_job(make_job(root, "local.safetensors", "dies_once.py"))  # the marker exists: no kill now
    assert_same_output(outcome.output, local.output)


def test_a_job_whose_worker_always_dies_fails_with_the_reason(cluster, tmp_path):
    root = write_project(tmp_path, KILL_ALWAYS + MODEL, "dies.py")
    events: list[tuple[str, str]] = []
    with pytest.raises(ClusterError) as caught:
        cluster.run_job(make_job(root, "out.safetensors", "dies.py"), on_event=lambda k, t: events.append((k, t)))
    message = str(caught.value)
    assert message.startswith("local: out.safetensors: the worker running it died (")
    assert "tried 2 times" in message
    assert [kind for kind, _ in events].count("retry") == 1
    assert not (root / "out.safetensors").exists()


def test_cancel_stops_a_running_remote_job_within_seconds(cluster, tmp_path):
    root = write_project(tmp_path, SLOW + MODEL, "slow.py")
    cancel = CancelToken()
    started = threading.Event()

    def on_event(kind: str, text: str) -> None:
        if kind == "host":
            started.set()

    def cancel_soon() -> None:
        started.wait(30)
        time.sleep(0.5)  # the task is importing the script (sleeping) by now
        cancel.cancel()
        cancelled_at.append(time.monotonic())

    cancelled_at: list[float] = []
    thread = threading.Thread(target=cancel_soon)
    thread.start()
    try:
        with pytest.raises(Cancelled):
            cluster.run_job(make_job(root, "out.safetensors", "slow.py"), cancel=cancel, on_event=on_event)
    finally:
        thread.join()
    assert time.monotonic() - cancelled_at[0] < 30.0  # the job sleeps 60 s
    assert not (root / "out.safetensors").exists()
    # The cluster still runs jobs afterwards.
    write_project(tmp_path, MODEL)
    assert os.path.exists(cluster.run_job(make_job(root, "after.safetensors")).output)


def test_the_jobs_own_errors_come_back_with_the_callers_paths(cluster, tmp_path):
    root = write_project(tmp_path, "raise RuntimeError('no model here')\n", "broken.py")
    for ship in (False, True):
        cluster.ship_files = ship
        try:
            with pytest.raises(ScriptError) as caught:
                cluster.run_job(make_job(root, "out.safetensors", "broken.py"))
        finally:
            cluster.ship_files = False
        assert str(root / "broken.py") in str(caught.value)
        assert "no model here" in str(caught.value)
        assert "mono-quant-job-" not in str(caught.value)  # not the worker's temporary folder


def test_connected_info_and_concurrency(cluster):
    info = cluster.connect()
    assert info == cluster.info == check_cluster("local")
    assert isinstance(info, ClusterInfo)
    assert (info.nodes, info.cpus, info.gpus) == (1, 2.0, 0.0)
    deadline = time.monotonic() + 10  # Ray reports the CPUs of the tests' killed workers free a moment later
    while cluster.default_concurrency() != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.default_concurrency() == 2
    assert RayCluster("local", concurrency=5).default_concurrency() == 5


def test_another_cluster_in_the_same_process_is_refused(cluster):
    with pytest.raises(ClusterError, match="already connected to the Ray cluster at local"):
        RayCluster("auto").connect()


def test_a_wrong_address_fails_at_once():
    for address in ("ray://127.0.0.1:1", "127.0.0.1:1"):
        started = time.monotonic()
        with pytest.raises(ClusterError, match=f"^{address}: cannot reach 127.0.0.1:1") as error:
            check_cluster(address, timeout_s=30)
        # Refused at once, not found out by the timeout (the message says which; the time only bounds it).
        assert "timed out" not in str(error.value) and time.monotonic() - started < 20
    with pytest.raises(ClusterError, match="not a Ray address"):
        RayCluster("nowhere")


def test_a_wrong_address_fails_at_once_when_connecting(tmp_path):
    # A separate process: this one holds the module's local instance.
    code = (
        "import time\nfrom mono_quant_core.cluster import RayCluster, ClusterError\nt = time.monotonic()\n"
        "try:\n    RayCluster('ray://127.0.0.1:1').connect(timeout_s=30)\nexcept ClusterError as e:\n"
        "    print('ERR', time.monotonic() - t, e)\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("ERR "), out
    elapsed, message = out[4:].split(" ", 1)
    assert message.startswith("ray://127.0.0.1:1: cannot reach 127.0.0.1:1") and "timed out" not in message
    assert float(elapsed) < 20  # far below the 30 s timeout: the refusal, not the wait


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ClusterError, match=r"^auto: ray is not installed: pip install 'mono-quant\[cluster\]'$"):
        check_cluster("auto")


def test_sensitivity_on_the_cluster_equals_the_local_run(cluster, tmp_path):
    from mono_quant_core.cluster import sensitivity_on
    from mono_quant_core.jobs.run import resolve_metric
    from mono_quant_core.loading import load_calibration, load_model
    from mono_quant_core.sensitivity import analyze_sensitivity

    root = write_project(tmp_path)
    model = load_model(str(root / "model.py"), str(root / "ckpt.pt"))
    samples = load_calibration(str(root / "calib"), model=model)
    # The script's metric: pickled by value with the model's classes (the workers never import the script).
    metric = resolve_metric(str(root / "model.py"), "evaluate", needed=True)
    for config in (QuantConfig(mode="static"), QuantConfig(dtype="int4", mode="weight-only", group_size=8)):
        local = analyze_sensitivity(model, config, samples, metric=metric)
        steps: list[str] = []
        remote = analyze_sensitivity(
            model,
            config,
            samples,
            metric=metric,
            evaluate_many=sensitivity_on(cluster),
            progress=lambda d, t, m, steps=steps: steps.append(m),
        )
        local_dict, remote_dict = local.to_dict(), remote.to_dict()
        assert local_dict.pop("elapsed_s") > 0 and remote_dict.pop("elapsed_s") > 0
        assert remote_dict == local_dict  # every layer's output SQNR and metric drop, exactly
        assert [layer.metric is not None for layer in local.layers] == [True, True]
        measured = sorted(m for m in steps if m.startswith("measured ") and m != "measured the float model")
        assert measured == ["measured fc1", "measured fc2"]
