import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from superalign.store import Store, stage_key


def test_stage_computed_once_then_cached(store):
    calls = []

    def compute(tmp: Path):
        calls.append(1)
        (tmp / "x.txt").write_text("hello")
        return {"n": 1}

    a = store.run("demo", {"a": 1}, compute)
    b = store.run("demo", {"a": 1}, compute)
    assert calls == [1]
    assert not a.cached and b.cached
    assert b.file("x.txt").read_text() == "hello"
    assert b.meta["result"] == {"n": 1}
    c = store.run("demo", {"a": 2}, compute)
    assert not c.cached and len(calls) == 2
    assert store.summary() == "stages: 1 cached, 2 computed"


def test_key_is_order_independent_and_input_sensitive():
    assert stage_key("k", {"a": 1, "b": [1, 2]}) == stage_key("k", {"b": [1, 2], "a": 1})
    assert stage_key("k", {"a": 1}) != stage_key("k", {"a": 2})
    assert stage_key("k", {"a": 1}) != stage_key("other", {"a": 1})
    assert stage_key("k", {"a": 1}, version=2) != stage_key("k", {"a": 1})


def test_failed_stage_leaves_nothing(store):
    def boom(tmp: Path):
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.run("demo", {"a": 1}, boom)
    key = stage_key("demo", {"a": 1})
    assert not store.has("demo", key)
    assert not store.path("demo", key).exists()
    assert not list((store.root / "demo").glob(".tmp-*"))


def test_stale_tmp_from_a_killed_process_is_cleaned(store):
    key = stage_key("demo", {"a": 1})
    stale = store.root / "demo" / f".tmp-{key}-99999-abcdef"
    stale.mkdir(parents=True)
    store.run("demo", {"a": 1}, lambda tmp: None)
    assert not stale.exists()


def _worker(root: str, out: str) -> None:
    s = Store(Path(root))

    def compute(tmp: Path):
        time.sleep(0.5)
        with open(out, "a") as f:
            f.write("computed\n")
        (tmp / "v").write_text("1")

    s.run("shared", {"x": 1}, compute)


def test_two_processes_compute_a_shared_stage_once(tmp_path):
    out = tmp_path / "calls.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "s"), str(out))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert out.read_text().count("computed") == 1
    meta = json.loads(next((tmp_path / "s" / "shared").glob("*/meta.json")).read_text())
    assert meta["kind"] == "shared"


def _dist_worker(rank: int, root: str, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    s = Store(Path(root))

    def compute(tmp: Path):
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)  # a collective inside the stage: every rank must take part
        (tmp / "sum").write_text(str(t.item()))
        return {"sum": t.item()}

    stage = s.run("collective", {"x": 1}, compute)
    with open(out, "a") as f:
        f.write(f"{rank}:{stage.meta['result']['sum']}:{stage.file('sum').read_text()}\n")
    dist.destroy_process_group()


def test_distributed_ranks_compute_a_stage_together_and_publish_once(tmp_path):
    import socket

    import torch.multiprocessing as tmp_mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "out.txt"
    tmp_mp.spawn(_dist_worker, args=(str(tmp_path / "s"), port, str(out)), nprocs=2, join=True)
    lines = sorted(out.read_text().split())
    assert lines == ["0:3.0:3.0", "1:3.0:3.0"]
    assert len(list((tmp_path / "s" / "collective").glob("*/meta.json"))) == 1
    assert not list((tmp_path / "s" / "collective").glob(".tmp-*"))
