"""The record names the user's command and the launcher: a Ray worker's is the driver's, a
torchrun or accelerate worker's the launcher's; a 1-process accelerate launch of 2 is refused."""

import pytest

from tests.test_cli import assert_one_clear_line, run_cli
from zoo import launch
from zoo.errors import ZooError

ACCELERATE = ["accelerate", "launch", "--num_processes", "2", "--cpu", "-m", "zoo.cli", "finetune", "squad"]


def clean_env(monkeypatch):
    for name in (launch.LAUNCHER_ENV, launch.COMMAND_ENV, "ACCELERATE_MIXED_PRECISION", "TORCHELASTIC_RUN_ID", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_a_ray_worker_records_the_drivers_command(monkeypatch):
    clean_env(monkeypatch)
    monkeypatch.setenv(launch.LAUNCHER_ENV, "ray")
    monkeypatch.setenv(launch.COMMAND_ENV, "zoo matrix squad --executor ray --address auto")
    assert launch.describe() == {"launcher": "ray", "world_size": 1, "command": "zoo matrix squad --executor ray --address auto"}


def test_a_torchrun_worker_records_the_launchers_command(monkeypatch):
    clean_env(monkeypatch)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(launch, "parent_argv", lambda: ["torchrun", "--nproc_per_node", "2", "-m", "zoo.cli", "finetune", "squad"])
    assert launch.describe() == {"launcher": "torchrun", "world_size": 2, "command": "torchrun --nproc_per_node 2 -m zoo.cli finetune squad"}


@pytest.mark.parametrize("argv, asked", [(ACCELERATE, 2), (["accelerate", "launch", "--num-processes=4", "x.py"], 4), (["accelerate", "launch", "x.py"], None)])
def test_asked_processes(argv, asked):
    assert launch.asked_processes(argv) == asked


def test_one_process_of_two_asked_under_accelerate_is_refused(monkeypatch):
    clean_env(monkeypatch)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setattr(launch, "parent_argv", lambda: ACCELERATE)
    with pytest.raises(ZooError, match="asked for 2 processes and accelerate started 1 .* torchrun --nproc_per_node 2"):
        launch.check_processes()
    monkeypatch.setenv("WORLD_SIZE", "2")
    launch.check_processes()  # as asked


def test_zoo_finetune_refuses_it_in_one_line(capsys, monkeypatch):
    clean_env(monkeypatch)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setattr(launch, "parent_argv", lambda: ACCELERATE)
    code, err = run_cli(capsys, "finetune", "squad")
    assert_one_clear_line(code, err, "asked for 2 processes and accelerate started 1")
