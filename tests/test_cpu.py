"""The CPU settings train runs under: faster, and not a number changed."""

import platform
import resource

import pytest
import torch

from rdtutorial.cpu import fast_cpu, flush_denormals, keep_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
BLOCKS, MIB = 24, 8  # 192 MiB in blocks below glibc's 32 MiB mmap cap: what a step frees and allocates again


def allocate() -> list[torch.Tensor]:
    return [torch.ones(MIB << 18) for _ in range(BLOCKS)]  # MIB MiB of float32 each, every page written


def page_faults_of_a_second_round() -> int:
    allocate()  # allocated, written and freed, like one training step's activations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    allocate()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def assert_freed_memory_is_reused() -> None:
    """Step after step (the fewest faults of three rounds), the pages written again fault < 5% of the time."""
    pages = BLOCKS * (MIB << 20) // resource.getpagesize()
    faults = min(page_faults_of_a_second_round() for _ in range(3))
    assert faults < 0.05 * pages, f"{faults} page faults for {pages} pages written again"


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_training_flushes_subnormal_floats_and_restores_the_default():
    tiny = torch.tensor([1e-39])  # below float32's smallest normal (1.2e-38)
    assert float(tiny * 1.0) > 0
    with flush_denormals():
        assert float(tiny * 1.0) == 0
    assert float(tiny * 1.0) > 0


@glibc
def test_freed_memory_is_reused_without_page_faults_and_returned_afterwards():
    with keep_freed_memory():
        assert_freed_memory_is_reused()
        kept = resident_mib()
    returned = resident_mib()
    assert kept - returned > 0.5 * BLOCKS * MIB, f"resident {kept:.0f} MiB inside, {returned:.0f} MiB after"


def test_nested_blocks_keep_the_settings_until_the_outermost_ends():
    tiny = torch.tensor([1e-39])
    with flush_denormals():
        with fast_cpu():  # train inside a notebook's block
            pass
        assert float(tiny * 1.0) == 0
    assert float(tiny * 1.0) > 0


@glibc
def test_nested_memory_blocks_keep_memory_until_the_outermost_ends():
    with keep_freed_memory():
        with keep_freed_memory():
            allocate()
        assert_freed_memory_is_reused()


def test_training_under_the_cpu_settings_gives_the_same_weights():
    def trained() -> torch.Tensor:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.InstanceNorm2d(8), torch.nn.Conv2d(8, 1, 1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
        x = torch.rand(4, 3, 16, 16)
        for _ in range(5):
            net(x).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    plain = trained()
    with fast_cpu():
        fast = trained()
    assert torch.equal(plain, fast)
