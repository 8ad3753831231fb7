"""Two machines on PyTorch's own engine: two ``torchrun --nnodes 2 --nproc_per_node 1
--rdzv_backend c10d --rdzv_endpoint 127.0.0.1:PORT`` launches on this machine, one process each
(gloo on the CPU), as a cluster runs one torchrun per node (docs/slurm_train.sbatch).

The deterministic set-up of tests/test_distributed.py (twin images, FCIS's sampling made
deterministic, SGD) makes 2 nodes x batch 1 comparable with 1 process x batch 2. Two launches of
two nodes (under a minute on two quiet cores; marked slow, still run in CI).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import REPO, _dist_cmd, _initial_state, _log, _relative_update_error, _single, _twin_dataset

from fcis.engine import load_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return _twin_dataset(tmp_path_factory.mktemp("shapes"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(args_of_node, timeout: int = 300) -> list[str]:
    """Launch ``torchrun --nnodes 2 --nproc_per_node 1 -m fcis train ARGS`` twice, as two nodes
    meeting at a c10d rendezvous on 127.0.0.1 (node ``n`` gets ``args_of_node(n)``); asserts
    that both succeed and returns their outputs (stdout + stderr)."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "--rdzv_id", f"fcis-test-{os.getpid()}-{port}", "--max_restarts", "0",
               "-m", "fcis", "train", "--device", "cpu", "--workers", "0", "--no-progress", *args_of_node(node)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for node, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {node} failed ({p.returncode}):\n{out[-6000:]}"
    return outputs


def _slurm_shims(folder: Path) -> Path:
    """Stand-ins for SLURM's ``scontrol`` (the job's first node: 127.0.0.1) and ``srun`` (the
    command once per node of ``SLURM_JOB_NUM_NODES``, in parallel, on this machine), and
    ``torchrun`` (this Python's), so that the batch script runs here as it would on a cluster."""
    folder.mkdir()
    shims = {
        "scontrol": "#!/bin/bash\necho 127.0.0.1\n",
        "srun": ("#!/bin/bash\nwhile [[ $1 == -* ]]; do shift; done\npids=()\n"
                 "for ((n = 0; n < SLURM_JOB_NUM_NODES; n++)); do SLURM_NODEID=$n \"$@\" & pids+=($!); done\n"
                 "rc=0\nfor p in \"${pids[@]}\"; do wait \"$p\" || rc=$?; done\nexit $rc\n"),
        "torchrun": f"#!/bin/bash\nexec {sys.executable} -m torch.distributed.run \"$@\"\n",
    }
    for name, text in shims.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def _sbatch(args: list[str], output: Path, shims: Path, timeout: int = 300) -> str:
    """``docs/slurm_train.sbatch ARGS`` for 2 nodes of 1 process (the shims stand in for SLURM);
    asserts success, returns its output."""
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_JOB_ID": str(os.getpid()), "GPUS_PER_NODE": "1", "PORT": str(_free_port()),
           "FCIS_OUTPUT": str(output)}
    proc = subprocess.run(["bash", str(REPO / "docs" / "slurm_train.sbatch"), "--device", "cpu", "--workers", "0",
                           "--no-progress", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"the batch script failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_nodes_train_as_one_process_write_once_and_resume(data, tmp_path):
    """2 nodes x 1 process x batch 1 against 1 process x batch 2 (the same global batch):

    - a fresh run to iteration 2, each node given its own --output (as nodes without a shared
      file system): rank 0's folder holds the run, the other node writes nothing (not even its
      folder); one ``last.pt``, no temporary file, one log line per iteration;
    - both nodes resume it to iteration 3 from one folder (as on a shared file system), launched
      by docs/slurm_train.sbatch (SLURM's commands stood in for; the script adds --resume);
    - the log's losses and learning rates, and the weights, match 3 uninterrupted iterations
      of one process with batch 2.
    """
    outs = [tmp_path / "node0", tmp_path / "node1"]
    printed = _two_nodes(lambda node: _dist_cmd(data, outs[node], 2))
    written = [o for o in outs if o.exists()]
    assert len(written) == 1, f"both nodes wrote a run folder: {outs}"  # rank 0's node alone
    run = written[0]
    assert sorted(p.name for p in run.iterdir() if p.name != "tb") == [
        "config.json", "curves.png", "last.pt", "log.jsonl", "summary.json"]
    assert sum(text.count("trained to iteration 2") for text in printed) == 1  # rank 0 reports
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 2 and ckpt["world_size"] == 2 and len(ckpt["rng_per_rank"]) == 2
    assert [r["iteration"] for r in _log(run)] == [1, 2]

    # docs/slurm_train.sbatch, with stand-ins for SLURM: it finds last.pt and adds --resume
    args = _dist_cmd(data, run, 3)
    at = args.index("--output")
    printed = _sbatch(args[:at] + args[at + 2:], run, _slurm_shims(tmp_path / "shims"))
    assert printed.count("trained to iteration 3") == 1
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary litter
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["iteration"] == 3 and resumed["data_state"] == {"epoch": 3, "batch": 0}

    single = _single(data, tmp_path / "single", 3)
    dist_lines, single_lines = _log(run), _log(tmp_path / "single")
    assert [r["iteration"] for r in dist_lines] == [r["iteration"] for r in single_lines] == [1, 2, 3]
    for d, s in zip(dist_lines, single_lines):
        assert d["lr"] == s["lr"]
        for k, v in s["losses"].items():
            assert d["losses"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (d["iteration"], k)
    assert _relative_update_error(_initial_state(), single["model"], resumed["model"]) < 1e-4
