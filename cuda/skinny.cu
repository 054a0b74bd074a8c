// skinny_gemm: the decoder step's projections for 9–64 rows (SPEC §5; batched streams, voxtral/gpu/skinny.py).
// out (=, +=, SwiGLU) x · wᵀ for x [M ≤ 64, K] bf16, w [N, K] bf16, f32 accumulation on Hopper tensor cores
// (sm_90a: TMA and wgmma; the launcher offers it nowhere else). What it replaces: cuBLAS at M = 64 reads
// the weights at 59–77 % of the copy rate (H200: wo 10.2 µs for 6.0 at the copy rate, w2 21.4 for 13.4),
// and the SwiGLU (silu_mul) and cuBLAS's split-K reduce are launches of their own, none of them chained.
//
// A block owns a box of NB weight rows (SWIGLU: the gate rows of NB/2 features, then their up rows) and
// a range of K: the S blocks of a box form a thread-block cluster that splits K into S equal ranges
// (split-K; the launcher picks NB and S so that the grid fills the GPU about once). One producer thread
// streams the box's weight tile [NB rows, 64 columns] and x's [64 rows, 64 columns] of each step into a
// ring of STAGES shared-memory stages with TMA (tensor maps made by the launcher: 128-byte swizzle, rows
// and columns past the tensor read as zeros), counted on the stage's "full" mbarrier; its first weight
// tiles need no earlier kernel, so they load before pdl_wait, x's after it. One warpgroup multiplies each
// stage with wgmma (m64n48k16, both operands read from shared memory by the tensor cores, the 64 × NB
// f32 accumulators in registers) and releases the stage on its "empty" mbarrier.
// The S partial sums of the cluster meet through distributed shared memory: each block leaves its
// [64, NB] f32 partials in its own shared memory, then block r sums the partials of all S blocks (in
// rank order: deterministic) for its share of the box's columns and writes the epilogue:
// STORE out = y; ADD out += y (the residual); SWIGLU out[m, f] = bf16(silu(y[m, f]) · y[m, F + f]).
#include "common.cuh"

constexpr int SKINNY_CONSUMERS = 128;  // one warpgroup; a producer warp follows
constexpr int SKINNY_ROWS = 64;        // rows of x a block multiplies (M ≤ 64; the rest read as zeros)
constexpr int SKINNY_NC = 48;          // columns of one wgmma (m64n48k16)
enum { SKINNY_STORE = 0, SKINNY_ADD = 1, SKINNY_SWIGLU = 2 };

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SKINNY_SM90A 1
#endif


__device__ __forceinline__ float skinny_silu(float v) { return v / (1.0f + __expf(-v)); }

#ifdef SKINNY_SM90A
// The 2-D tile at (column c0, row c1) of a tensor map → shared memory at dst, counted on mbarrier bar.
__device__ __forceinline__ void tma_load_2d(unsigned dst, const TensorMap* map, int c0, int c1, unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
        "[%4];\n" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}
// Shared-memory matrix descriptor: K-major rows of 128 bytes in the 128-byte swizzle, 8-row groups 1024
// bytes apart (stride byte offset); the leading byte offset is unused by this layout.
__device__ __forceinline__ unsigned long long wgmma_desc(unsigned addr) {
    return (unsigned long long)((addr & 0x3ffff) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) |
           (1ull << 62);
}
// d[64 × 48] += a[64 × 16] · b[48 × 16]ᵀ, both from shared memory (descriptors).
__device__ __forceinline__ void wgmma_n48(float (&d)[24], unsigned long long a, unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %26, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
        "%22, %23}, %24, %25, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
        : "l"(a), "l"(b), "r"(1));
}
// Keeps the compiler from moving accumulator reads or writes across the asynchronous products.
__device__ __forceinline__ void acc_fence(float (&d)[24]) {
#pragma unroll
    for (int i = 0; i < 24; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ __forceinline__ void cluster_sync_all() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// 4 f32 at shared-memory address `local` (16-byte aligned) of the cluster's block `rank`.
__device__ __forceinline__ float4 ld_cluster_f32x4(unsigned local, unsigned rank) {
    unsigned remote;
    float4 v;
    asm("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(remote));
    return v;
}
#endif

// Launch: grid (boxes · S), 160 threads, cluster (S, 1, 1) (or none: S = 1), dynamic shared memory
// 1024 + stages · (NB + 64) · 128 + 128 bytes (skinny.shared_bytes); boxes = ceil(N / NB), SWIGLU
// ceil(F / (NB/2)). wmap: w's tensor map, boxes of [NB (SWIGLU NB/2) rows, 64 columns]; xmap: x's, boxes
// of [64 rows, 64 columns]; both bf16 with the 128-byte swizzle. A PDL launch: w is read before pdl_wait.
template <int NB, int EPI>
__global__ void __launch_bounds__(SKINNY_CONSUMERS + 32, 1)
    skinny_gemm(const __grid_constant__ TensorMap wmap,  // w: [N, K] bf16 (SWIGLU: w1 rows 0…F−1, w3 rows F…)
                const __grid_constant__ TensorMap xmap,  // x: [M, K] bf16
                void* __restrict__ out,  // out: [M, N] f32 (STORE, ADD), [M, F] bf16 (SWIGLU, F = N/2)
                int M, int N, int K,
                int stages) {  // stages: 2 … 8, the ring's length
    static_assert(NB % SKINNY_NC == 0 && NB <= 240, "weight rows a block: a multiple of 48, at most 240");
#ifdef SKINNY_SM90A
    constexpr int W_BYTES = NB * 128, STAGE = W_BYTES + SKINNY_ROWS * 128;  // multiples of 1024
    constexpr int NCH = NB / SKINNY_NC;
    extern __shared__ unsigned char skinny_smem_raw[];
    unsigned char* smem = skinny_smem_raw + ((1024 - (smem_addr(skinny_smem_raw) & 1023)) & 1023);
    const unsigned base = smem_addr(smem), bars = base + stages * STAGE;  // full[S], empty[S]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    unsigned rank, size;
    asm("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
    asm("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(size));
    const int box = blockIdx.x / size, F = N / 2;
    const int steps = (K + 63) / 64;
    const int s0 = (int)((long long)steps * rank / size), n_steps = (int)((long long)steps * (rank + 1) / size) - s0;
    if (tid == 0) {
        for (int s = 0; s < stages; ++s) mbar_init(bars + 8 * s, 1), mbar_init(bars + 64 + 8 * s, 4);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warp == SKINNY_CONSUMERS / 32) {  // the producer warp: one thread issues every copy
        if (lane == 0) {
            auto load_w = [&](int i) {
                const unsigned dst = base + (i % stages) * STAGE, full = bars + 8 * (i % stages);
                const int col = (s0 + i) * 64;
                if constexpr (EPI == SKINNY_SWIGLU) {
                    tma_load_2d(dst, &wmap, col, box * (NB / 2), full);
                    tma_load_2d(dst + W_BYTES / 2, &wmap, col, F + box * (NB / 2), full);
                } else {
                    tma_load_2d(dst, &wmap, col, box * NB, full);
                }
            };
            auto load_x = [&](int i) {
                const unsigned dst = base + (i % stages) * STAGE + W_BYTES;
                tma_load_2d(dst, &xmap, (s0 + i) * 64, 0, bars + 8 * (i % stages));
            };
            const int first = min(n_steps, stages);
            for (int i = 0; i < first; ++i) {
                mbar_expect_tx(bars + 8 * i, STAGE);
                load_w(i);
            }
            pdl_wait();  // x comes from earlier kernels; w does not
            for (int i = 0; i < first; ++i) load_x(i);
            for (int i = first; i < n_steps; ++i) {
                const int s = i % stages;
                mbar_wait(bars + 64 + 8 * s, (i / stages - 1) & 1);  // the consumers are done with it
                mbar_expect_tx(bars + 8 * s, STAGE);
                load_w(i);
                load_x(i);
            }
        }
        __syncwarp();
    } else {
        pdl_wait();  // out (ADD: the residual) comes from earlier kernels
        pdl_launch_dependents();
        float acc[NCH][24];
#pragma unroll
        for (int c = 0; c < NCH; ++c)
#pragma unroll
            for (int i = 0; i < 24; ++i) acc[c][i] = 0.0f;
        for (int i = 0; i < n_steps; ++i) {
            const int s = i % stages;
            mbar_wait(bars + 8 * s, (i / stages) & 1);
            const unsigned ws = base + s * STAGE, xs = ws + W_BYTES;
#pragma unroll
            for (int c = 0; c < NCH; ++c) acc_fence(acc[c]);
            asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
#pragma unroll
                for (int c = 0; c < NCH; ++c)
                    wgmma_n48(acc[c], wgmma_desc(xs + 32 * kk), wgmma_desc(ws + c * SKINNY_NC * 128 + 32 * kk));
            asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
            asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
            for (int c = 0; c < NCH; ++c) acc_fence(acc[c]);
            __syncwarp();
            if (lane == 0) mbar_arrive(bars + 64 + 8 * s);
        }
        asm volatile("bar.sync 1, %0;\n" ::"n"(SKINNY_CONSUMERS) : "memory");  // every stage is read: reuse it
        // wgmma's accumulators: warp w holds rows 16w + g and 16w + g + 8; register 4j + e of column
        // chunk c is column 48c + 8j + 2t + (e & 1), row + 8 for e ≥ 2.
        float* red = reinterpret_cast<float*>(smem);  // [64, NB] f32
#pragma unroll
        for (int c = 0; c < NCH; ++c)
#pragma unroll
            for (int j = 0; j < SKINNY_NC / 8; ++j) {
                const int n = SKINNY_NC * c + 8 * j + 2 * t, m = 16 * warp + g;
                *reinterpret_cast<float2*>(red + m * NB + n) = make_float2(acc[c][4 * j], acc[c][4 * j + 1]);
                *reinterpret_cast<float2*>(red + (m + 8) * NB + n) =
                    make_float2(acc[c][4 * j + 2], acc[c][4 * j + 3]);
            }
    }
    cluster_sync_all();  // every block's partials are in place (the producer warp takes part)
    if (warp < SKINNY_CONSUMERS / 32) {
        // Block r sums groups of 4 columns [G·r/S, G·(r+1)/S) of the G in its box (SWIGLU: of each half),
        // the S partials' loads of a group issued together, added in rank order.
        auto sum4 = [&](int m, int col) {
            const unsigned a = base + 4u * (unsigned)(m * NB + col);
            float4 v[8];
#pragma unroll
            for (int q = 0; q < 8; ++q)
                if (q < (int)size) v[q] = ld_cluster_f32x4(a, q);
            float4 y = v[0];
#pragma unroll
            for (int q = 1; q < 8; ++q)
                if (q < (int)size) y.x += v[q].x, y.y += v[q].y, y.z += v[q].z, y.w += v[q].w;
            return y;
        };
        const int rows = min(M, SKINNY_ROWS);
        if constexpr (EPI == SKINNY_SWIGLU) {
            constexpr int G = NB / 8;  // groups of 4 features in a half
            const int g0 = G * rank / size, groups = G * (rank + 1) / size - g0;
            bf16* o = static_cast<bf16*>(out);
            for (int idx = tid; idx < rows * groups; idx += SKINNY_CONSUMERS) {
                const int m = idx / groups, j = 4 * (g0 + idx % groups), f = box * (NB / 2) + j;
                const float4 gate = sum4(m, j), up = sum4(m, NB / 2 + j);
                const float y[4] = {skinny_silu(gate.x) * up.x, skinny_silu(gate.y) * up.y,
                                    skinny_silu(gate.z) * up.z, skinny_silu(gate.w) * up.w};
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (f + e < F) o[(size_t)m * F + f + e] = f32_to_bf16(y[e]);
            }
        } else {
            constexpr int G = NB / 4;
            const int g0 = G * rank / size, groups = G * (rank + 1) / size - g0;
            float* o = static_cast<float*>(out);
            for (int idx = tid; idx < rows * groups; idx += SKINNY_CONSUMERS) {
                const int m = idx / groups, j = 4 * (g0 + idx % groups), n = box * NB + j;
                const float4 s4 = sum4(m, j);
                const float y[4] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (n + e >= N) break;
                    if constexpr (EPI == SKINNY_ADD)
                        o[(size_t)m * N + n + e] += y[e];
                    else
                        o[(size_t)m * N + n + e] = y[e];
                }
            }
        }
    }
    cluster_sync_all();  // no block leaves while another still reads its partials
#endif
}
