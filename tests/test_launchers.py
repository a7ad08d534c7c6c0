"""The shell launchers start tools/train.py and tools/test.py under mmengine's own launchers with the
arguments given (a stand-in interpreter and ``srun`` record the command line)."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDER = "#!/bin/sh\nprintf '%s\\n' \"$(basename \"$0\")\" \"$@\"\n"


@pytest.fixture
def run(tmp_path):
    for name in ("python-stub", "srun"):
        path = tmp_path / name
        path.write_text(RECORDER)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PYTHON": str(tmp_path / "python-stub"),
           "PATH": f"{tmp_path}:{os.environ['PATH']}", "GPUS": "4", "GPUS_PER_NODE": "2"}

    def launch(script, *args):
        done = subprocess.run(["bash", str(ROOT / "tools" / script), *args], env=env,
                              capture_output=True, text=True)
        return done.returncode, done.stdout.splitlines(), done.stderr
    return launch


def test_dist_train_runs_torchrun_with_the_pytorch_launcher(run):
    rc, argv, _ = run("dist_train.sh", "cfg.py", "2", "--amp")
    assert rc == 0
    assert argv == ["python-stub", "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0",
                    "--master_addr=127.0.0.1", "--master_port=29500", "--nproc_per_node=2",
                    str(ROOT / "tools/train.py"), "cfg.py", "--amp", "--launcher", "pytorch"]


def test_dist_test_passes_config_and_checkpoint(run):
    rc, argv, _ = run("dist_test.sh", "cfg.py", "ckpt.pth", "3")
    assert rc == 0
    assert argv[-5:] == [str(ROOT / "tools/test.py"), "cfg.py", "ckpt.pth", "--launcher", "pytorch"]
    assert "--nproc_per_node=3" in argv


def test_slurm_train_runs_srun_one_task_per_gpu(run):
    rc, argv, _ = run("slurm_train.sh", "part", "job", "cfg.py", "work", "--resume")
    assert rc == 0
    assert argv == ["srun", "-p", "part", "--job-name=job", "--gres=gpu:2", "--ntasks=4",
                    "--ntasks-per-node=2", "--cpus-per-task=5", "--kill-on-bad-exit=1",
                    argv[9], "-u",
                    str(ROOT / "tools/train.py"), "cfg.py", "--work-dir=work", "--resume",
                    "--launcher", "slurm"]
    assert argv[9].endswith("python-stub")


def test_slurm_test_passes_config_and_checkpoint(run):
    rc, argv, _ = run("slurm_test.sh", "part", "job", "cfg.py", "ckpt.pth")
    assert rc == 0
    assert argv[-6:] == ["-u", str(ROOT / "tools/test.py"), "cfg.py", "ckpt.pth", "--launcher",
                         "slurm"]


@pytest.mark.parametrize("script, args", [("dist_train.sh", ["cfg.py"]),
                                          ("dist_test.sh", ["cfg.py", "ckpt"]),
                                          ("slurm_train.sh", ["p", "j", "cfg.py"]),
                                          ("slurm_test.sh", [])])
def test_too_few_arguments_print_the_usage(run, script, args):
    rc, argv, err = run(script, *args)
    assert rc == 2 and argv == []
    assert err.startswith("usage: ") and "CONFIG" in err
