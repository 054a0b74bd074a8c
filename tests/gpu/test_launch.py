"""launch (voxtral/gpu/launch.py): a PDL launch passes the same arguments as CuPy's own launch.

Every argument kind the launchers use (array, int32, float32, int64, uint64, Python int and float,
float64), a 2-D grid and dynamic shared memory; bad arguments and launch errors raise.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from voxtral.gpu.launch import launch, launch_graph

cp = pytest.importorskip("cupy", reason="CuPy is not importable")

ECHO = r"""
extern "C" __global__ void echo(const float* x, int a, float b, long long c, unsigned long long d,
                                long long e, double f, double g, double* out) {
    extern __shared__ float tmp[];  // [blockDim.x]
    tmp[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x != 0) return;
    float sum = 0.0f;
    for (int i = 0; i < blockDim.x; ++i) sum += tmp[i];
    const double v[10] = {sum, (double)a, b, (double)c, (double)d, (double)e, f, g, (double)blockIdx.x,
                          (double)blockIdx.y};
    double* o = out + (blockIdx.y * gridDim.x + blockIdx.x) * 10;
    for (int i = 0; i < 10; ++i) o[i] = v[i];
}
"""
GRID, BLOCK = (3, 2), (64,)


def echo_args(out):
    x = cp.arange(BLOCK[0], dtype=np.float32)
    return (x, np.int32(-7), np.float32(1.5), np.int64(-(2**40)), np.uint64(2**63 + 2**20), 12345, 0.25,
            np.float64(-3.0), out)  # fmt: skip


def test_launch_pdl_passes_what_cupy_passes():
    kernel = cp.RawKernel(ECHO, "echo")
    want, got = (cp.full((GRID[1], GRID[0], 10), np.nan) for _ in range(2))
    kernel(GRID, BLOCK, echo_args(want), shared_mem=4 * BLOCK[0])
    launch(kernel, GRID, BLOCK, echo_args(got), shared_mem=4 * BLOCK[0], pdl=True)
    want, got = cp.asnumpy(want), cp.asnumpy(got)
    np.testing.assert_array_equal(got, want)
    n = BLOCK[0]
    expected = [n * (n - 1) / 2, -7, 1.5, -(2**40), float(2**63 + 2**20), 12345, 0.25, -3.0]
    np.testing.assert_array_equal(got[1, 2, :8], expected)
    np.testing.assert_array_equal(got[1, 2, 8:], [2, 1])


CLUSTER = r"""
extern "C" __global__ void ranks(int* out) {  // out: [grid, 2] cluster rank, cluster size
    unsigned r = 0, n = 1;
#if __CUDA_ARCH__ >= 900
    asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    asm("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
#endif
    if (threadIdx.x == 0) out[2 * blockIdx.x] = r, out[2 * blockIdx.x + 1] = n;
}
"""


@pytest.mark.parametrize("pdl", [False, True])
@pytest.mark.parametrize("cluster", [1, 2, 4, 8])
def test_launch_in_clusters(cluster, pdl):
    if int(cp.cuda.Device().compute_capability) < 90 and cluster > 1:
        pytest.skip("thread-block clusters need sm_90")
    kernel = cp.RawKernel(CLUSTER, "ranks")
    out = cp.full((16, 2), -1, np.int32)
    launch(kernel, (16,), (32,), (out,), pdl=pdl, cluster=cluster)
    want = np.stack([np.arange(16) % cluster, np.full(16, cluster)], axis=1)
    np.testing.assert_array_equal(cp.asnumpy(out), want)


def test_launch_rejects_bad_arguments():
    kernel = cp.RawKernel(ECHO, "echo")
    out = cp.zeros((GRID[1], GRID[0], 10))
    args = echo_args(out)
    with pytest.raises(TypeError, match="NumPy scalar"):
        launch(kernel, GRID, BLOCK, (*args[:-1], cp.asnumpy(out)), shared_mem=4 * BLOCK[0], pdl=True)
    with pytest.raises(RuntimeError, match="cuLaunchKernelEx"):
        launch(kernel, GRID, (4096,), args, pdl=True)  # more threads than a block may have


def test_a_graph_replays_through_the_driver_as_through_cupy():
    """launch_graph: the first call instantiates through CuPy, later ones are cuGraphLaunch; both run
    the captured work on the given stream."""
    stream = cp.cuda.Stream(non_blocking=True)
    kernel = cp.RawKernel(ECHO, "echo")
    with stream:
        out = cp.zeros((GRID[1], GRID[0], 10))
        args = echo_args(out)
        stream.begin_capture()
        launch(kernel, GRID, BLOCK, args, shared_mem=4 * BLOCK[0], pdl=True)
        graph = stream.end_capture()
        for _ in range(2):
            out.fill(np.nan)
            launch_graph(graph, stream)
            stream.synchronize()
            assert graph.graphExec
            np.testing.assert_array_equal(cp.asnumpy(out)[1, 2, 8:], [2, 1])
            assert not np.isnan(cp.asnumpy(out)).any()


def test_launches_keep_the_gil():
    """The driver and cuBLAS are called holding the GIL (ctypes.PyDLL): a launch only queues work, and
    giving the GIL away at each one let reader threads stall the engine thread (launch.py's doc)."""
    from voxtral.gpu import gemm
    from voxtral.gpu.launch import libcuda

    assert isinstance(libcuda(), ctypes.PyDLL)
    assert isinstance(gemm._cublas().lib, ctypes.PyDLL)


class _Work:
    """Stands in for a captured graph: one device copy of `n` floats per launch."""

    def __init__(self, n: int):
        import cupy

        self.a, self.b = cupy.zeros(n, np.float32), cupy.zeros(n, np.float32)

    def launch(self, stream):
        self.b.data.copy_from_device_async(self.a.data, self.a.nbytes, stream)


def test_fastest_keeps_the_preferred_graph_unless_another_is_clearly_faster():
    import cupy

    from voxtral.gpu.graphs import fastest

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        small, big = _Work(1 << 10), _Work(1 << 26)
        g, ms = fastest(stream, {"fused": big, "cuBLAS": small}, prefer="fused")
        assert g is small and ms["cuBLAS"] < 0.95 * ms["fused"]  # 256 MB against 4 KB: clearly faster
        twin = _Work(1 << 26)
        g, _ = fastest(stream, {"fused": big, "cuBLAS": twin}, prefer="fused", margin=0.5)
        assert g is big  # equal work: within the margin, so the preferred one
        g, _ = fastest(stream, {"fused": big, "cuBLAS": small})
        assert g is small
