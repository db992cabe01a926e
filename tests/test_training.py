"""ThreadTuner: the CPU thread count follows the free cores (timed with a fake clock)."""

from __future__ import annotations

import io

import pytest
import torch

from thinslice import training


@pytest.fixture
def clock(monkeypatch):
    """A clock that advances only when a fake training step runs; the step's cost depends on
    the thread count through `cost[threads]`, set by each test."""
    state = {"now": 0.0, "cost": {}}
    monkeypatch.setattr(training.time, "perf_counter", lambda: state["now"])
    threads = torch.get_num_threads()
    yield state
    torch.set_num_threads(threads)


def _run(tuner, clock, steps):
    for _ in range(steps):
        clock["now"] += clock["cost"][torch.get_num_threads()]
        tuner.step()


def test_the_tuner_drops_a_thread_beside_a_busy_process_and_takes_it_back_when_it_leaves(clock):
    torch.set_num_threads(4)
    log = io.StringIO()
    tuner = training.ThreadTuner(torch.device("cpu"), window_s=1.0, probe_every=3, log=log)
    assert tuner.ladder == [4, 2, 1]
    clock["cost"] = {4: 0.30, 2: 0.10, 1: 0.16}   # a neighbour holds two of the four cores
    _run(tuner, clock, 200)
    assert torch.get_num_threads() == 2
    assert "4 -> 2" in log.getvalue()
    clock["cost"] = {4: 0.05, 2: 0.10, 1: 0.16}   # it left
    _run(tuner, clock, 400)
    assert torch.get_num_threads() == 4
    tuner.close()
    assert torch.get_num_threads() == 4


def test_the_tuner_keeps_every_thread_on_an_idle_machine(clock):
    torch.set_num_threads(2)
    tuner = training.ThreadTuner(torch.device("cpu"), log=io.StringIO())   # default windows and probes
    clock["cost"] = {2: 0.05, 1: 0.09}
    counts = []
    for _ in range(4000):
        _run(tuner, clock, 1)
        counts.append(torch.get_num_threads())
    assert tuner.ladder[tuner.current] == 2   # (the last steps may be a probe)
    assert 0 < counts.count(1) < 0.1 * len(counts)   # it probes, and probes cost little


def test_the_tuner_leaves_one_thread_and_cuda_alone(clock):
    torch.set_num_threads(1)
    assert not training.ThreadTuner(torch.device("cpu")).enabled
    torch.set_num_threads(2)
    assert not training.ThreadTuner(torch.device("cuda")).enabled


def test_reduced_precision_is_bfloat16_only_where_the_gpu_computes_in_it(monkeypatch):
    assert training.autocast_dtype(torch.device("cpu")) is None
    for native, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        # recent torch reports bfloat16 on every GPU unless asked about native support
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
        assert training.autocast_dtype(torch.device("cuda")) == dtype
