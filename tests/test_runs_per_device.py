"""Several runs per GPU: placement from a (fake) device inventory, memory checked before placing."""

from __future__ import annotations

import pytest

from runners.local import GPU_HEADROOM, GpuInfo, plan_placement
from scaling_db.errors import RunError

GiB = 2**30


def gpus(*free_gib: float, total_gib: float = 80.0) -> list[GpuInfo]:
    return [GpuInfo(i, int(f * GiB), int(total_gib * GiB)) for i, f in enumerate(free_gib)]


def test_k_runs_share_each_gpu_round_robin():
    p = plan_placement(100, workers=None, device="auto", runs_per_device=3, run_bytes=GiB, inventory=gpus(80, 80))
    assert p.gpus == [0, 1, 0, 1, 0, 1] and p.workers == 6 and p.note is None


def test_free_memory_caps_the_runs_on_a_gpu_and_says_so():
    usable = 20 - GPU_HEADROOM * 80  # GiB free beyond the headroom on GPU 1
    p = plan_placement(100, workers=None, device="cuda", runs_per_device=4, run_bytes=5 * GiB,
                       inventory=gpus(80, 20))
    assert p.gpus.count(0) == 4 and p.gpus.count(1) == int(usable // 5) == 2
    assert "6 runs at once on 2 GPU(s), not 4 per GPU" in p.note


def test_never_more_workers_than_runs_or_asked():
    assert plan_placement(3, workers=None, device="auto", runs_per_device=4, inventory=gpus(80)).gpus == [0, 0, 0]
    assert plan_placement(100, workers=2, device="auto", runs_per_device=4, inventory=gpus(80, 80)).gpus == [0, 1]


def test_no_gpu_with_room_is_an_error_naming_the_sizes():
    with pytest.raises(RunError, match=r"no GPU has memory for a run \(40.0 GiB estimated vs 30.0 GiB free"):
        plan_placement(4, workers=None, device="cuda", runs_per_device=2, run_bytes=40 * GiB, inventory=gpus(30))


def test_on_cpu_the_option_means_nothing_and_says_so():
    p = plan_placement(4, workers=2, device="cpu", runs_per_device=4)
    assert p.gpus is None and p.workers == 2 and "applies to GPUs" in p.note
    assert plan_placement(4, workers=2, device="cpu").note is None


def test_one_run_per_gpu_by_default_as_before():
    p = plan_placement(10, workers=None, device="auto", inventory=gpus(80, 80, 80))
    assert p.gpus == [0, 1, 2] and p.workers == 3
