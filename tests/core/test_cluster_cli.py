"""``mono-quant run --ray local`` and ``mono-quant sensitivity --ray local``: the same output and exit status as local.

Each command runs in its own process, which starts and stops its own private
Ray instance on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from test_cluster import MODEL, make_job, without_timings, write_project

from mono_quant_core.cli.main import main


def mono_quant(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "mono_quant_core.cli", *args], capture_output=True, text=True, timeout=240, env=env
    )


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["mono_quant"])  # noqa: SIM118


def test_run_with_ray_writes_what_the_local_run_writes(tmp_path, capsys):
    root = write_project(tmp_path / "p", MODEL)
    (root / "broken.py").write_text("raise RuntimeError('no model here')\n", encoding="utf-8")
    files = []
    for name, settings in (("a", {}), ("b", {"mode": "static"}), ("c", {"dtype": "int4", "mode": "weight-only"})):
        job = make_job(root, f"ray-{name}.safetensors", **settings)
        job.save(root / f"{name}.toml")
        files.append(str(root / f"{name}.toml"))
    make_job(root, "ray-broken.safetensors", "broken.py").save(root / "broken.toml")
    files.append(str(root / "broken.toml"))

    remote = mono_quant("run", "--ray", "local", "--concurrency", "2", "--json", *files)
    assert remote.returncode == 1, remote.stderr  # one job failed, as locally
    assert "Ray cluster at local: 1 node(s), 2 CPUs" in remote.stderr
    assert "mono-quant: error: " + str(root / "broken.toml") + ": " in remote.stderr
    remote_rows = json.loads(remote.stdout)

    for path in files:  # the same jobs, locally, writing local-* files
        text = Path(path).read_text().replace("ray-", "local-")
        Path(path).write_text(text)
    capsys.readouterr()
    assert main(["run", "--json", *files]) == 1
    local_rows = json.loads(capsys.readouterr().out)

    assert [r["job"] for r in remote_rows] == [r["job"] for r in local_rows] == files  # in the order given
    assert [r["status"] for r in remote_rows] == [r["status"] for r in local_rows] == ["done"] * 3 + ["failed"]
    assert remote_rows[3]["error"] == local_rows[3]["error"]
    for r, lo in zip(remote_rows[:3], local_rows[:3], strict=True):
        assert r["output"] == lo["output"].replace("local-", "ray-")
        assert r["output_sqnr_db"] == lo["output_sqnr_db"]
        remote_tensors, remote_meta = read(Path(r["output"]))
        local_tensors, local_meta = read(Path(lo["output"]))
        assert sorted(remote_tensors) == sorted(local_tensors)
        assert all(torch.equal(remote_tensors[k], local_tensors[k]) for k in local_tensors)
        assert without_timings(remote_meta) == without_timings(local_meta)


def test_sensitivity_with_ray_reports_what_the_local_run_reports(tmp_path, capsys):
    # The demo CNN's metric on the cluster is test_cluster.py's; here the command line around it.
    root = write_project(tmp_path / "p", MODEL)
    common = ["--script", str(root / "model.py"), "--checkpoint", str(root / "ckpt.pt")]
    common += ["--calib", str(root / "calib"), "--mode", "static"]
    remote = mono_quant("sensitivity", *common, "--report", str(tmp_path / "ray.json"), "--ray", "local")
    assert remote.returncode == 0, remote.stderr
    assert main(["sensitivity", *common, "--report", str(tmp_path / "local.json")]) == 0
    local_table = capsys.readouterr().out
    assert remote.stdout == local_table
    ray_report = json.loads((tmp_path / "ray.json").read_text())
    local_report = json.loads((tmp_path / "local.json").read_text())
    assert ray_report.pop("elapsed_s") > 0 and local_report.pop("elapsed_s") > 0
    assert ray_report == local_report


def test_ctrl_c_cancels_the_running_remote_jobs_at_once(tmp_path, monkeypatch, capsys):
    """Ctrl-C during ``run --ray`` cancels the jobs running on the cluster (it waited for them)."""
    import signal
    import threading
    import time
    from types import SimpleNamespace

    import mono_quant_core.cluster as cluster_module
    from mono_quant_core.errors import Cancelled

    seen: list[bool] = []

    class Fake:
        def __init__(self, address, *, retries=1, concurrency=None):
            self.concurrency = concurrency

        def connect(self, timeout_s: float = 15.0):
            return SimpleNamespace(nodes=1, cpus=2.0, gpus=0.0)

        def default_concurrency(self, job=None) -> int:
            return 2

        def run_job(self, job, progress=None, cancel=None, on_event=None):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if cancel is not None and cancel.is_set():
                    seen.append(True)
                    raise Cancelled("cancelled by the user")
                time.sleep(0.01)
            seen.append(False)
            raise AssertionError("never cancelled")

        def close(self) -> None:
            pass

    monkeypatch.setattr(cluster_module, "RayCluster", Fake)
    root = write_project(tmp_path / "p", MODEL)
    files = []
    for i in range(3):
        make_job(root, f"out{i}.safetensors").save(root / f"job{i}.toml")
        files.append(str(root / f"job{i}.toml"))
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # what Ctrl-C sends
    started = time.monotonic()
    code = main(["run", "--ray", "local", *files])
    assert time.monotonic() - started < 20  # the fake jobs wait 30 s for the cancel
    assert code != 0
    assert seen == [True, True]  # both running jobs cancelled; the third never started
    assert not any((root / f"out{i}.safetensors").exists() for i in range(3))


def test_retries_without_ray_is_refused_not_ignored(tmp_path, capsys):
    """``--retries`` only means something on a cluster: without ``--ray`` it is an error naming both."""
    write_project(tmp_path)
    make_job(tmp_path, "a.safetensors").save(tmp_path / "a.toml")
    for argv in (
        ["run", "--retries", "2", str(tmp_path / "a.toml")],
        ["sensitivity", "--script", str(tmp_path / "model.py"), "--calib", str(tmp_path / "calib"), "--retries", "0"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--retries" in err and "--ray" in err, err
