// Prototype, not shipped (dev/chain_timing.py compiles it with NVRTC after cuda/common.cuh and
// cuda/gemv.cu): a chain of decoder-step GEMVs as ONE persistent launch, one block per SM.
// The question it answers (issue #14): between two launches of the step the weight stream stops (the
// next launch's producer starts only when this launch's blocks leave); here one producer warp per block
// streams its share of every GEMV's weights back to back into the shared-memory ring, and only the
// consumer warps wait at each GEMV boundary for the whole grid (a counter per op: every block adds one
// when its tiles of the op are written). Consumers stage x through L2 (other blocks wrote it in this
// launch), so no read goes through the non-coherent path.
// Op d (ChainOp) = gemv_bulk's products with an epilogue STORE, ADD or SWIGLU_BF16 and an optional
// RMSNorm prologue; op d reads what op d − 1 wrote (the step's chain: qkv, wo, w13, w2 per layer, then
// the output head). Each op ends, for the consumers, with a stage of no bytes (the end mark).

struct ChainOp {
    const void* x;   // x: [B, K] f32 (x_bf16 = 0) or bf16
    const float* g;  // g: [K] f32 RMSNorm weight, or null
    const bf16* w;   // w: [N, K] bf16 (SWIGLU_BF16: w1 rows 0…F−1, w3 rows F…2F−1)
    void* out;       // out: [B, N] f32 (STORE, ADD), [B, N/2] bf16 (SWIGLU_BF16)
    int N, K, epi, x_bf16, kc, tps, pad0, pad1;
};

__device__ __forceinline__ unsigned long long chain_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;\n" : "=l"(t));
    return t;
}
__device__ __forceinline__ unsigned chain_ld_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ uint4 chain_ld_cg16(const void* p) {
    uint4 v;
    asm volatile("ld.global.cg.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ float chain_ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];\n" : "=f"(v) : "l"(p));
    return v;
}

// gemv_stage_x for one op, x read through L2 (K % 8 == 0, x and g 16-byte aligned).
template <int WARPS>
__device__ __forceinline__ void chain_stage_x(const ChainOp& op, bf16* xh, bf16* xl, float* red, int B, int S) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, chunks = S / 8, K = op.K;
    for (int b = 0; b < B; ++b) {
        float sq = 0.0f;
        for (int c = tid; c < chunks; c += WARPS * 32) {
            const int k = 8 * c;
            uint4 hi = make_uint4(0, 0, 0, 0), lo = make_uint4(0, 0, 0, 0);
            if (op.x_bf16) {
                if (k < K) hi = chain_ld_cg16(static_cast<const bf16*>(op.x) + (size_t)b * K + k);
            } else {
                const float* xr = static_cast<const float*>(op.x) + (size_t)b * K;
                float v[8] = {};
                if (k < K) {
                    const uint4 a = chain_ld_cg16(xr + k), c4 = chain_ld_cg16(xr + k + 4);
                    v[0] = __uint_as_float(a.x), v[1] = __uint_as_float(a.y), v[2] = __uint_as_float(a.z);
                    v[3] = __uint_as_float(a.w), v[4] = __uint_as_float(c4.x), v[5] = __uint_as_float(c4.y);
                    v[6] = __uint_as_float(c4.z), v[7] = __uint_as_float(c4.w);
                    if (op.g) {
#pragma unroll
                        for (int i = 0; i < 8; ++i) sq = fmaf(v[i], v[i], sq), v[i] *= op.g[k + i];
                    }
                }
                const float none[8] = {};  // the norm (a runtime choice here) is applied above
                gemv_split8<false>(v, none, sq, hi, lo);
            }
            *reinterpret_cast<uint4*>(xh + (size_t)b * S + k) = hi;
            if (!op.x_bf16) *reinterpret_cast<uint4*>(xl + (size_t)b * S + k) = lo;
        }
        if (op.g) {
            sq = warp_sum(sq);
            if (lane == 0) red[b * WARPS + warp] = sq;
        }
    }
}

template <int WARPS>
__device__ __forceinline__ void chain_epilogue(const float* p, int tile, float scale, const ChainOp& op, int B) {
    const int lane = threadIdx.x & 31, gb = lane >> 2, t = lane & 3, N = op.N;
    if (gb >= B) return;
    float v0 = 0.0f, v1 = 0.0f;
#pragma unroll
    for (int i = 0; i < WARPS; ++i) v0 += p[(i * 32 + lane) * 2], v1 += p[(i * 32 + lane) * 2 + 1];
    v0 *= scale, v1 *= scale;
    if (op.epi == GEMV_SWIGLU_BF16) {
        const int F = N / 2, f = tile * (GEMV_TILE / 2) + t;
        if (f < F) static_cast<bf16*>(op.out)[(size_t)gb * F + f] = f32_to_bf16(gemv_silu(v0) * v1);
    } else {
        const int n = tile * GEMV_TILE + 2 * t;
        float* o = static_cast<float*>(op.out) + (size_t)gb * N + n;
        const bool add = op.epi == GEMV_ADD;
        if (n < N) o[0] = add ? chain_ld_cg(o) + v0 : v0;
        if (n + 1 < N) o[1] = add ? chain_ld_cg(o + 1) + v1 : v1;
    }
}

__device__ __forceinline__ int chain_tiles(const ChainOp& op) {
    return op.epi == GEMV_SWIGLU_BF16 ? (op.N / 2 + 3) / 4 : (op.N + GEMV_TILE - 1) / GEMV_TILE;
}
__device__ __forceinline__ int chain_stage_bytes(const ChainOp& op) {
    return op.kc >= op.K ? op.tps * GEMV_TILE * 2 * op.K : GEMV_TILE * (2 * op.kc + 64);
}
__device__ __forceinline__ int chain_row(const ChainOp& op, int i, int g) {  // gemv_bulk_row at run time
    if (op.kc < op.K) return g * (2 * op.kc + 64);
    if (op.epi == GEMV_SWIGLU_BF16) return ((g & 1) * 4 * op.tps + 4 * i + (g >> 1)) * 2 * op.K;
    return (8 * i + g) * 2 * op.K;
}
__device__ __forceinline__ int chain_tile_row(const ChainOp& op, int tile, int g) {
    if (op.epi == GEMV_SWIGLU_BF16) {
        const int F = op.N / 2, f = tile * (GEMV_TILE / 2) + (g >> 1);
        return f < F ? f + (g & 1) * F : -1;
    }
    const int n = tile * GEMV_TILE + g;
    return n < op.N ? n : -1;
}

// Launch: grid = SMs (every block resident: one per SM by its shared memory), (WARPS + 1)·32 threads,
// dynamic shared memory 256 + 2·WARPS·256 + 32·WARPS + x_bytes (2·B·gemv_x_stride(max K)·2, rounded
// up to 128) + STAGES·stage_stride. done: [n_ops + 1] uint32 zeros (left zero).
// sched: [n_ops] int32 zeros (left zero); DYNAMIC: a block's producer takes its next tiles of an op
// from sched[d] (as gemv_bulk's tile counter), else block b owns tiles [tiles·b/G, tiles·(b+1)/G).
template <int WARPS, int STAGES, bool DYNAMIC>
__global__ void __launch_bounds__((WARPS + 1) * 32, 1)
    gemv_chain(const ChainOp* __restrict__ ops, int n_ops, int B, float eps, unsigned* done, int* sched,
               int x_bytes, int stage_stride, int mode,
               unsigned long long* stamps) {  // stamps: [G, n_ops, 3] ns (released, x staged, tiles done) or null
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char gemv_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, G = gridDim.x, bid = blockIdx.x;
    unsigned long long* bars = reinterpret_cast<unsigned long long*>(gemv_smem);
    int2* work = reinterpret_cast<int2*>(gemv_smem + 128);
    float2* part = reinterpret_cast<float2*>(gemv_smem + 256);      // [2][WARPS][32]
    float* red = reinterpret_cast<float*>(part + 2 * WARPS * 32);    // [8][WARPS]
    bf16* xh = reinterpret_cast<bf16*>(red + GEMV_MAX_B * WARPS);
    const size_t x_end = (size_t)(reinterpret_cast<unsigned char*>(xh) - gemv_smem) + x_bytes;
    unsigned char* stage_base = gemv_smem + (x_end + 127) / 128 * 128;
    const unsigned stages = smem_addr(stage_base), full = smem_addr(bars), empty = full + 8 * STAGES;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) mbar_init(full + 8 * s, 1), mbar_init(empty + 8 * s, WARPS);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warp == WARPS) {  // the producer: every op's weights, back to back
        if (lane == 0) {
            int it = 0;
            for (int d = 0; d < n_ops; ++d) {
                const ChainOp op = ops[d];
                const int tiles = chain_tiles(op), K = op.K;
                const bool whole = op.kc >= K;
                const int chunks = whole ? 1 : (K + op.kc - 1) / op.kc;
                int first = DYNAMIC ? bid * op.tps : (int)((long long)tiles * bid / G);
                const int t1 = DYNAMIC ? tiles : (int)((long long)tiles * (bid + 1) / G);
                for (;;) {
                    const bool end = first >= t1;
                    const int n_tiles = end ? 0 : min(op.tps, t1 - first);
                    for (int c = 0; c < (end ? 1 : chunks); ++c, ++it) {
                        const int s = it % STAGES, r = it / STAGES;
                        const unsigned bar = full + 8 * s, dst = stages + (unsigned)(s * stage_stride);
                        if (r > 0) mbar_wait(empty + 8 * s, (r - 1) & 1);
                        work[s] = make_int2(end ? -1 : first, n_tiles);
                        if (end) {  // the consumers' end of op d: a stage with no bytes
                            mbar_arrive(bar);
                        } else if (whole) {
                            if (op.epi == GEMV_SWIGLU_BF16) {
                                const int F = op.N / 2, f0 = first * 4, nf = min(F, f0 + 4 * n_tiles) - f0;
                                const unsigned bytes = 2u * nf * K;
                                mbar_expect_tx(bar, 2 * bytes);
                                bulk_copy(dst, op.w + (size_t)f0 * K, bytes, bar);
                                bulk_copy(dst + 4 * op.tps * 2 * K, op.w + (size_t)(F + f0) * K, bytes, bar);
                            } else {
                                const int n0 = first * GEMV_TILE, nr = min(op.N, n0 + GEMV_TILE * n_tiles) - n0;
                                const unsigned bytes = 2u * nr * K;
                                mbar_expect_tx(bar, bytes);
                                bulk_copy(dst, op.w + (size_t)n0 * K, bytes, bar);
                            }
                        } else {
                            const int k0 = c * op.kc;
                            const unsigned bytes = 2 * min(op.kc, K - k0);
                            int rows[GEMV_TILE], n_rows = 0;
#pragma unroll
                            for (int i = 0; i < GEMV_TILE; ++i) rows[i] = chain_tile_row(op, first, i), n_rows += rows[i] >= 0;
                            mbar_expect_tx(bar, bytes * n_rows);
#pragma unroll
                            for (int i = 0; i < GEMV_TILE; ++i)
                                if (rows[i] >= 0) bulk_copy(dst + i * (2 * op.kc + 64), op.w + (size_t)rows[i] * K + k0, bytes, bar);
                        }
                    }
                    if (end) break;
                    first = DYNAMIC ? (atomicAdd(sched + d, 1) + G) * op.tps : first + op.tps;
                }
            }
        }
        return;
    }

    const int gb = lane >> 2, t = lane & 3;
    const bool row_ok = gb < B;
    float acc[2][4] = {};
    int it = 0, ti = 0;
    for (int d = 0; d < n_ops; ++d) {
        const ChainOp op = ops[d];
        if (d > 0 && mode != 2) {  // op d − 1 written by every block (mode 2: no wait, timing only)
            if (threadIdx.x == 0) {
                while (chain_ld_acquire(done + d - 1) < (unsigned)G) {
                    if (mode == 1) __nanosleep(32);
                }
                __threadfence();
            }
            consumers_sync(WARPS);
        }
        unsigned long long* stamp = stamps ? stamps + ((size_t)bid * n_ops + d) * 3 : nullptr;
        if (stamp && threadIdx.x == 0) stamp[0] = chain_now();
        const int K = op.K, S = gemv_x_stride(K);
        bf16* xl = xh + (size_t)B * S;
        chain_stage_x<WARPS>(op, xh, xl, red, B, S);
        consumers_sync(WARPS);
        if (stamp && threadIdx.x == 0) stamp[1] = chain_now();
        float scale = 1.0f;
        if (op.g && row_ok) {
            float ss = 0.0f;
            for (int i = 0; i < WARPS; ++i) ss += red[gb * WARPS + i];
            scale = rsqrtf(ss / (float)K + eps);
        }
        const bool whole = op.kc >= K;
        const int chunks = whole ? 1 : (K + op.kc - 1) / op.kc;
        for (int c = 0;; ++it) {
            const int s = it % STAGES, r = it / STAGES, k0 = c * op.kc;
            mbar_wait(full + 8 * s, r & 1);
            const int2 wk = work[s];
            if (wk.x < 0) {
                __syncwarp();
                if (lane == 0) mbar_arrive(empty + 8 * s);
                ++it;
                break;
            }
            const int len = min(op.kc, K - k0), steps = (len + GEMV_STEP_K - 1) / GEMV_STEP_K;
            for (int i = 0; i < wk.y; ++i) {
                const unsigned char* wrow = stage_base + (size_t)s * stage_stride + chain_row(op, i, gb);
#pragma unroll 4
                for (int j = warp; j < steps; j += WARPS) {
                    const int col = j * GEMV_STEP_K + 8 * t;
                    uint4 wv = make_uint4(0, 0, 0, 0), h = make_uint4(0, 0, 0, 0), l = make_uint4(0, 0, 0, 0);
                    if (col < len) wv = *reinterpret_cast<const uint4*>(wrow + 2 * col);
                    if (row_ok) {
                        h = *reinterpret_cast<const uint4*>(xh + (size_t)gb * S + k0 + col);
                        if (!op.x_bf16) l = *reinterpret_cast<const uint4*>(xl + (size_t)gb * S + k0 + col);
                    }
                    const unsigned a0[4] = {h.x, l.x, h.y, l.y}, a1[4] = {h.z, l.z, h.w, l.w};
                    mma_bf16_16816(acc[0], a0, wv.x, wv.y);
                    mma_bf16_16816(acc[1], a1, wv.z, wv.w);
                }
                if (c + 1 < chunks) continue;
                float2* p = part + (ti & 1) * WARPS * 32;
                p[warp * 32 + lane] = make_float2(acc[0][0] + acc[0][2] + acc[1][0] + acc[1][2],
                                                  acc[0][1] + acc[0][3] + acc[1][1] + acc[1][3]);
#pragma unroll
                for (int q = 0; q < 4; ++q) acc[0][q] = acc[1][q] = 0.0f;
                consumers_sync(WARPS);
                if (warp == ti % WARPS) chain_epilogue<WARPS>(reinterpret_cast<float*>(p), wk.x + i, scale, op, B);
                ++ti;
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(empty + 8 * s);
            c = c + 1 == chunks ? 0 : c + 1;
        }
        consumers_sync(WARPS);  // every epilogue of this block's tiles of op d written
        if (stamp && threadIdx.x == 0) stamp[2] = chain_now();
        if (threadIdx.x == 0) {
            __threadfence();
            atomicAdd(done + d, 1u);
        }
    }
    if (threadIdx.x == 0 && atomicAdd(done + n_ops, 1u) == (unsigned)G - 1) {  // the last block: reset
        for (int d = 0; d <= n_ops; ++d) atomicExch(done + d, 0u);
        for (int d = 0; d < n_ops; ++d) atomicExch(reinterpret_cast<unsigned*>(sched + d), 0u);
    }
#endif
}
