"""Multi-process training: two gloo processes on the CPU end their steps with identical parameters,
and stop together (exit code 2, one message) when a check that only rank 0 makes fails."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch.distributed import TCPStore

from tests.test_train_cli import _argv
from tests.test_train_step import _batch, _options
from lib import distributed
from lib.distributed import DistInfo
from trainer.loop import EpochSampler, Trainer

WORLD = 2
STEPS = 2  # a second step also proves that no parameter was left out of the first reduction


def _worker(rank: int, init_file: str, tmp: str) -> None:
    torch.set_num_threads(1)
    info = distributed.setup_explicit(rank, WORLD, f"file://{init_file}", torch.device("cpu"))
    try:
        torch.manual_seed(100 + rank)  # different initial weights: DDP must start every rank from rank 0's
        trainer = Trainer(_options(Path(tmp) / f"rank{rank}"), info)  # own cache: the ranks share names
        if rank == 0:
            torch.save({k: v.clone() for k, v in trainer.net.named_parameters()}, Path(tmp) / "initial.pt")
        for step in range(STEPS):
            trainer.train_batch(_batch(seed=10 * rank + step), epoch=1)  # each rank sees its own data
        torch.save({k: v.detach().clone() for k, v in trainer.net.named_parameters()}, Path(tmp) / f"rank{rank}.pt")
    finally:
        distributed.teardown(info)


def test_two_gloo_processes_end_a_step_with_identical_parameters(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    initial = torch.load(tmp_path / "initial.pt")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert set(ranks[0]) == set(ranks[1]) == set(initial)
    for key in initial:
        torch.testing.assert_close(ranks[1][key], ranks[0][key], rtol=0, atol=0, msg=key)
    changed = [k for k in initial if not torch.equal(initial[k], ranks[0][k])]
    assert len(changed) > len(initial) // 2  # the steps did train


def _cli_worker(rank: int, port: int, argv: list[str], tmp: str) -> None:
    """train.main as torchrun would start it on `rank`; records the exit code and what went to stderr.
    As under torchrun, the ranks join a store their launcher serves (TORCHELASTIC_USE_AGENT_STORE)."""
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    torch.set_num_threads(1)
    from train import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    (Path(tmp) / f"cli{rank}.json").write_text(json.dumps({"code": code, "stderr": err.getvalue()}))


def test_a_failed_rank_0_check_stops_every_rank_cleanly(tmp_path):
    (tmp_path / "a-file").write_text("in the way")
    argv = _argv(tmp_path, "--max-epochs", "1", "--dev", "cpu")
    argv[argv.index("--checkpoints") + 1] = str(tmp_path / "a-file" / "ckpt")  # rank 0 checks it
    # the store keeps its port from the start: a port found free, closed and bound again by rank 0 seconds later
    # could be taken meanwhile by another process of a busy machine
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    mp.spawn(_cli_worker, args=(store.port, argv, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"cli{r}.json").read_text()) for r in range(WORLD)]
    assert [r["code"] for r in ranks] == [2, 2]
    assert "--checkpoints" in ranks[0]["stderr"] and "Traceback" not in ranks[0]["stderr"]
    assert ranks[1]["stderr"] == ""  # only rank 0 reports
    assert not (tmp_path / "tmcache" / "data").exists()  # nothing was generated


def test_epoch_sampler_shards_a_capped_epoch_without_overlap():
    data = list(range(20))
    shards = []
    for rank in range(WORLD):
        sampler = EpochSampler(data, DistInfo(rank, WORLD, torch.device("cpu")), seed=3, limit=7)
        sampler.set_epoch(5)
        shards.append(list(sampler))
        assert len(sampler) == 4 == len(shards[-1])
    assert not set(shards[0]) & set(shards[1])  # 8 of a 20-long permutation: no repeats
    sampler.set_epoch(6)
    assert list(sampler) != shards[1]  # a fresh shuffle each epoch
    full = EpochSampler(data, DistInfo(0, 1, torch.device("cpu")), seed=3, limit=None)
    assert sorted(full) == data
