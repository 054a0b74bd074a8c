// Decoder-step matrix-vector products (SPEC §5, §8): out = epilogue(prologue(x) · wᵀ) for B ≤ 8 rows of x
// and a bf16 weight w [N, K], at the speed of streaming w once from device memory.
//
// Prologue (NORM): x'[b] = x[b] · rsqrt(mean_k x[b]² + eps) · g. Each block stages g ⊙ x in shared memory
// and applies the per-row scale s_b in the epilogue (y = s_b · Σ_k (g ⊙ x)[b, k] · w[n, k]).
// Epilogues: STORE out = y, ADD out += y (residual), SWIGLU out[b, f] = silu(y[b, f]) · y[b, F + f] with
// w = [w1 (gate); w3 (up)] of 2F rows, written f32 or bf16.
//
// Tensor cores do the products: mma.sync m16n8k16 with x as the 16-row A operand (rows 0…7: the bf16
// high halves of the B ≤ 8 rows of x, rows 8…15: their bf16 low halves, so f32 x keeps ~16 mantissa
// bits) and 8 weight rows as the n8 B operand. A tile is 8 weight rows (SWIGLU: 4 gate rows interleaved
// with their 4 up rows, so one lane ends up holding both halves of an output). Lane (g, t) loads 16
// bytes (k = 32s + 8t … +7) of tile row g per 32-wide k step s; since a dot product does not care about
// the order of k, the eight values are fed to two mmas as logical k {2t, 2t+1, 2t+8, 2t+9}, and lane
// (g, t) reads x row g at the same eight k from shared memory.
//
// One persistent block per SM (WARPS warps) walks tiles blockIdx.x, +gridDim.x, …; its warps split
// each tile's K (warp w takes steps w, w+WARPS, …, so the block reads WARPS·64 contiguous bytes of a
// row per round), UNROLL steps per chunk, two chunks in flight (ping-pong registers, prefetched across
// tile boundaries). The warps' partial sums of a tile meet in a shared-memory slot: SYNC 0, after one
// block barrier, warp (tile % WARPS) sums and writes; SYNC 1, no barrier: each warp bumps the slot's
// counter and the last to arrive sums and writes, so no warp waits for a slower one (a slot is reused
// SLOTS tiles later, once the previous tile in it has been read). Weights are read with
// ld.global.nc.L1::no_allocate (+ an L2 prefetch-size hint). As a block issues its last loads it
// prefetches its share of the first next_bytes of the next launch's weights into L2, so that launch
// starts from L2 while this one drains.
// Programmatic dependent launch (pdl=True in voxtral/gpu/gemv.py): a block issues its first chunk of
// weight loads, then waits for the previous kernel (pdl_wait) before it reads x, and at once lets the
// next kernel launch (pdl_launch_dependents), whose blocks land on SMs as this launch's blocks leave.
#include "gemv.cuh"

// Warm L2 with this block's share of the next weight matrix (128-byte lines), once its own loads are out.
__device__ __forceinline__ void gemv_prefetch_next(const bf16* next, unsigned long long bytes, int nthreads) {
    const unsigned long long lines = bytes / 128, per = (lines + gridDim.x - 1) / gridDim.x;
    const unsigned long long lo = per * blockIdx.x, hi = min(lines, lo + per);
    const char* base = reinterpret_cast<const char*>(next);
    for (unsigned long long l = lo + threadIdx.x; l < hi; l += nthreads)
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(base + l * 128));
}

template <int SYNC>
struct GemvSlots {
    static constexpr int N = SYNC ? 4 : 2;  // partial-sum slots: tiles in flight between the warps
};

template <int EPI, bool NORM, bool X_BF16, int WARPS, int UNROLL, int PREFETCH, int SYNC, bool VEC>
__device__ __forceinline__ void gemv_run(const void* __restrict__ x, const float* __restrict__ g,
                                         const bf16* __restrict__ w, void* __restrict__ out, int B, int N, int K,
                                         float eps, const bf16* next, unsigned long long next_bytes,
                                         unsigned char* smem) {
    using Chunk = GemvChunk<EPI, X_BF16, WARPS, UNROLL, PREFETCH, VEC>;
    constexpr int SLOTS = GemvSlots<SYNC>::N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int S = gemv_x_stride(K), steps = (K + GEMV_STEP_K - 1) / GEMV_STEP_K;
    const int my_steps = steps > warp ? (steps - warp + WARPS - 1) / WARPS : 0;
    const int chunks = my_steps > 0 ? (my_steps + UNROLL - 1) / UNROLL : 1;  // ≥ 1: every warp keeps pace
    const int tiles = gemv_swiglu(EPI) ? (N / 2 + 3) / 4 : (N + GEMV_TILE - 1) / GEMV_TILE;
    const int t0 = blockIdx.x, dt = gridDim.x;
    const int my_tiles = t0 < tiles ? (tiles - 1 - t0) / dt + 1 : 0;
    if (my_tiles == 0) return;  // the whole block: no barrier is skipped by only some warps
    float2* part = reinterpret_cast<float2*>(smem);                 // [SLOTS][WARPS][32] partial sums
    int* count = reinterpret_cast<int*>(part + SLOTS * WARPS * 32);  // [SLOTS] warps arrived (SYNC 1)
    volatile int* ready = count + SLOTS;                             // [SLOTS] uses read (SYNC 1)
    float* red = reinterpret_cast<float*>(count + 16);               // [8][WARPS] sums of squares
    bf16* xh = reinterpret_cast<bf16*>(red + GEMV_MAX_B * WARPS);    // [B, S] bf16 high halves
    bf16* xl = xh + (size_t)B * S;                                   // [B, S] bf16 low halves (f32 x)

    uint4 buf0[UNROLL], buf1[UNROLL];
    Chunk::load(buf0, w, t0, 0, my_steps, N, K);  // in flight while the previous kernel ends and x is staged
    if (threadIdx.x < 2 * SLOTS) count[threadIdx.x] = 0;
    pdl_wait();  // x (and out, for ADD) come from earlier kernels; w does not
    pdl_launch_dependents();
    gemv_stage_x<NORM, X_BF16, WARPS>(x, g, xh, xl, red, B, K, S);
    __syncthreads();
    const int gb = lane >> 2;
    float scale = 1.0f;  // RMSNorm scale of the batch row gb this lane writes
    if constexpr (NORM) {
        if (gb < B) {
            float ss = 0.0f;
            for (int i = 0; i < WARPS; ++i) ss += red[gb * WARPS + i];
            scale = rsqrtf(ss / (float)K + eps);
        }
    }
    float acc[2][4] = {};
    const int total = my_tiles * chunks;
    int ti = 0, c = 0;   // tile ordinal and chunk of the chunk being computed
    int lt = 0, lc = 1;  // … and of the next chunk to load
    if (lc == chunks) lc = 0, lt = 1;
    for (int q = 0; q < total; ++q) {
        const bool more = q + 1 < total;
        if (!more && next_bytes) gemv_prefetch_next(next, next_bytes, WARPS * 32);
        if (q & 1) {
            if (more) Chunk::load(buf0, w, t0 + lt * dt, lc, my_steps, N, K);
            Chunk::mma(acc, buf1, xh, xl, c, my_steps, B, S);
        } else {
            if (more) Chunk::load(buf1, w, t0 + lt * dt, lc, my_steps, N, K);
            Chunk::mma(acc, buf0, xh, xl, c, my_steps, B, S);
        }
        if (++lc == chunks) lc = 0, ++lt;
        if (++c < chunks) continue;
        // Tile ti done by this warp: its partial goes to slot ti % SLOTS; one warp sums them and writes.
        const int tile = t0 + ti * dt, slot = ti % SLOTS, use = ti / SLOTS;
        const float2 mine = make_float2(acc[0][0] + acc[0][2] + acc[1][0] + acc[1][2],
                                        acc[0][1] + acc[0][3] + acc[1][1] + acc[1][3]);
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[0][i] = acc[1][i] = 0.0f;
        float2* p = part + slot * WARPS * 32;
        if constexpr (SYNC == 0) {
            // All warps meet at one barrier per tile; warp ti % WARPS writes (2 slots: one barrier apart).
            p[warp * 32 + lane] = mine;
            __syncthreads();
            if (warp == ti % WARPS) gemv_epilogue<EPI, WARPS>(reinterpret_cast<float*>(p), tile, scale, out, B, N);
        } else {
            // No barrier: the last warp to arrive (an atomic count per slot) writes the tile. A slot is
            // reused SLOTS tiles later, once ready[slot] says the previous tile in it has been read.
            if (use > 0) {
                if (lane == 0)
                    while (ready[slot] < use) __nanosleep(32);
                __syncwarp();
                __threadfence_block();
            }
            p[warp * 32 + lane] = mine;
            __threadfence_block();
            __syncwarp();
            int last = 0;
            if (lane == 0) last = atomicAdd(count + slot, 1) == (use + 1) * WARPS - 1;
            if (__shfl_sync(0xffffffffu, last, 0)) {
                __threadfence_block();
                gemv_epilogue<EPI, WARPS>(reinterpret_cast<volatile float*>(p), tile, scale, out, B, N);
                __threadfence_block();
                __syncwarp();
                if (lane == 0) ready[slot] = use + 1;
            }
        }
        c = 0, ++ti;
    }
}

// Launch: grid ≤ tiles (persistent), WARPS·32 threads, dynamic shared memory
// SLOTS·WARPS·256 + 64 + 32·WARPS + B·S·2·(X_BF16 ? 1 : 2) bytes with S = gemv_x_stride(K), SLOTS = 2 (SYNC 0)
// or 4 (SYNC 1). next/next_bytes: the weights of the next launch, of which this one warms the first
// next_bytes in L2 as it runs out of its own loads (0: none).
template <int EPI, bool NORM, bool X_BF16, int WARPS, int UNROLL, int PREFETCH, int SYNC>
__global__ void __launch_bounds__(WARPS * 32, 16 / WARPS)
    gemv(const void* __restrict__ x,   // x: [B, K] f32 (X_BF16: bf16), B ≤ 8
         const float* __restrict__ g,  // g: [K] f32 RMSNorm weight (NORM), else unused
         const bf16* __restrict__ w,   // w: [N, K] bf16 (SWIGLU: w1 rows 0…F−1, w3 rows F…2F−1)
         void* __restrict__ out,       // out: [B, N] f32 (STORE, ADD), [B, F] f32 or bf16 (SWIGLU)
         int B, int N, int K, float eps,
         const bf16* __restrict__ next,  // next: any device buffer of ≥ next_bytes bytes, or unused
         unsigned long long next_bytes) {
    static_assert(!(NORM && X_BF16), "the RMSNorm prologue takes f32 x");
    static_assert(WARPS >= 1 && 16 % WARPS == 0, "WARPS must divide 16");
    extern __shared__ __align__(16) unsigned char gemv_smem[];
    if (K % 8 == 0 && (size_t)w % 16 == 0)
        gemv_run<EPI, NORM, X_BF16, WARPS, UNROLL, PREFETCH, SYNC, true>(x, g, w, out, B, N, K, eps, next,
                                                                         next_bytes, gemv_smem);
    else
        gemv_run<EPI, NORM, X_BF16, WARPS, UNROLL, PREFETCH, SYNC, false>(x, g, w, out, B, N, K, eps, next,
                                                                          next_bytes, gemv_smem);
}


// ---- bulk-copy variant (sm_90+): the same products, prologue and epilogues, fed by the TMA unit ----
// A producer warp streams the block's weight rows into a ring of STAGES shared-memory stages with bulk
// copies (cp.async.bulk, completion counted on the stage's "full" mbarrier); the WARPS consumer warps
// wait for a stage, do the mma steps of their k slice of it (as gemv: warp w takes steps w, w+WARPS, …)
// and release it on its "empty" mbarrier. The producer never reads x, so it starts before pdl_wait: a
// launch's first stages load while the previous kernel ends. A block owns a contiguous range of tiles
// (a few long DRAM streams, not tiles strided across the grid).
// A stage is either `tps` whole tiles (kc = K: rows 8·tile … of STORE/ADD in one copy; SWIGLU: the gate
// rows and the up rows of its 4·tps features in two), or the 8 rows of one tile × kc columns (kc < K,
// tps = 1: one copy per row, stage rows padded by 64 bytes so that the two rows of a 16-byte shared-
// memory phase fall on disjoint banks). Each bulk copy costs the thread issuing it ~100 ns (H200), so
// copies are made as large as the stage (1–8 KB copies left the step 25–150 % slower) and a stage's row
// copies are issued by lanes 0 … 7 at once (one lane issuing all 8: w2 at 8 rows 21.3 µs against 19.8).
// Tiles end with the SYNC 0 combine of gemv (two partial slots, one barrier of the consumer warps).
// bytes (a multiple of 16, 16-byte aligned ends) global → shared, counted on mbarrier bar.
__device__ __forceinline__ void bulk_copy(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
}

// Byte offset in a stage of the weight row that lane group g of the stage's i-th tile reads.
template <int EPI>
__device__ __forceinline__ int gemv_bulk_row(int i, int g, int K, int kc, int tps) {
    if (kc < K) return g * (2 * kc + 64);  // one tile, rows copied one by one into padded rows
    if constexpr (gemv_swiglu(EPI))       // gate rows of the stage's features, then their up rows
        return ((g & 1) * 4 * tps + 4 * i + (g >> 1)) * 2 * K;
    return (8 * i + g) * 2 * K;
}

// x held in registers (XU > 0): lane (g, t) of warp w keeps, for each chunk c < XC and u < XU, the 8
// values of x row g (NORM: g ⊙ x; bf16 hi and, for f32 x, lo halves) at the columns c·kc + 32·(w +
// u·WARPS) + 8t … +7 that its mma steps of every tile read: the same columns for every tile, so they are
// loaded once, straight from global memory, and no lane reads x from shared memory per step (with B = 8
// rows those reads were twice the weight bytes). Needs chunks ≤ XC and ceil(kc / 32) ≤ XU·WARPS.
// Fragment f of a lane: chunk f / XU, step u = f % XU of its warp; column −1: nothing there (zeros).
template <int WARPS, int XU>
__device__ __forceinline__ int gemv_x_column(int f, int B, int K, int kc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, k0 = f / XU * kc;
    const int col = (warp + f % XU * WARPS) * GEMV_STEP_K + 8 * (lane & 3);
    return (lane >> 2) < B && k0 < K && col < min(kc, K - k0) ? k0 + col : -1;
}

// Every load of the lane's fragments is issued before any is used (one round trip to L2, not one per
// fragment); the norm weight g was copied to shared memory (gs) before the PDL wait (a consumer barrier
// follows the loads: every consumer warp calls this). Then NORM: each
// (row, warp) sum of squares into red[row·WARPS + warp], as gemv_stage_x leaves them.
template <bool NORM, bool X_BF16, int WARPS, int XU, int XC, int XF>
__device__ __forceinline__ void gemv_x_fragments(const void* __restrict__ x, const float* gs, uint4 (&xh)[XF],
                                                 uint4 (&xl)[XF], float* red, int B, int K, int kc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gb = lane >> 2, t = lane & 3;
    if constexpr (X_BF16) {
#pragma unroll
        for (int f = 0; f < XU * XC; ++f) {
            const int k = gemv_x_column<WARPS, XU>(f, B, K, kc);
            xh[f] = xl[f] = make_uint4(0, 0, 0, 0);
            if (k >= 0)
                xh[f] = __ldcg(reinterpret_cast<const uint4*>(static_cast<const bf16*>(x) + (size_t)gb * K + k));
        }
    } else {
        float4 raw[XF][2];
#pragma unroll
        for (int f = 0; f < XU * XC; ++f) {
            const int k = gemv_x_column<WARPS, XU>(f, B, K, kc);
            raw[f][0] = raw[f][1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (k >= 0) {
                const float* xr = static_cast<const float*>(x) + (size_t)gb * K + k;
                raw[f][0] = __ldcg(reinterpret_cast<const float4*>(xr));
                raw[f][1] = __ldcg(reinterpret_cast<const float4*>(xr + 4));
            }
        }
        if constexpr (NORM) consumers_sync(WARPS);  // gs written by every consumer warp, x loads in flight
        float sq = 0.0f;
#pragma unroll
        for (int f = 0; f < XU * XC; ++f) {
            const int k = gemv_x_column<WARPS, XU>(f, B, K, kc);
            float v[8] = {raw[f][0].x, raw[f][0].y, raw[f][0].z, raw[f][0].w,
                          raw[f][1].x, raw[f][1].y, raw[f][1].z, raw[f][1].w};
            float gv[8] = {};  // past K (k < 0) x is zero: the weights stay zero too
            if constexpr (NORM) {
                if (k >= 0) {
                    const float4 ga = *reinterpret_cast<const float4*>(gs + k);
                    const float4 gb4 = *reinterpret_cast<const float4*>(gs + k + 4);
                    gv[0] = ga.x, gv[1] = ga.y, gv[2] = ga.z, gv[3] = ga.w;
                    gv[4] = gb4.x, gv[5] = gb4.y, gv[6] = gb4.z, gv[7] = gb4.w;
                }
            }
            gemv_split8<NORM>(v, gv, sq, xh[f], xl[f]);
        }
        if constexpr (NORM) {  // the 4 lanes of a row group, then one sum per (row, warp)
            sq += __shfl_xor_sync(0xffffffffu, sq, 1);
            sq += __shfl_xor_sync(0xffffffffu, sq, 2);
            if (t == 0 && gb < B) red[gb * WARPS + warp] = sq;
        }
    }
}

// Passes (XC = 0: bf16 x without a norm whose K needs more fragments than a lane holds, w2's 9216 at
// 2–8 rows): the lane holds the XU fragments of one chunk, and the block walks its tiles chunk-major —
// chunk 0 of every tile, then chunk 1 of every tile, … — adding each (tile, chunk)'s per-lane sums into
// shared memory ([GEMV_PASS_TILES][WARPS][32] float2 where x would be staged); the next chunk's
// fragments load into registers of their own during the current pass (XU = 4 leaves 96 registers a
// lane unspilled; 5 spilled 24 bytes, 6 64; the next chunk in shared memory by cp.async instead, with
// 6 fragments a chunk, lost: H200, B = 8, 24.4 µs a launch against 21.1–21.8, its 223 KB block leaving
// no room beside it). Tiles are shared out statically (≤ GEMV_PASS_TILES a block).
constexpr int GEMV_PASS_TILES = 4;

template <int WARPS, int XU>
__device__ __forceinline__ void gemv_x_chunk(const bf16* __restrict__ x, uint4 (&xh)[XU], int c, int B, int K, int kc) {
    const int gb = (threadIdx.x & 31) >> 2;
#pragma unroll
    for (int u = 0; u < XU; ++u) {
        const int k = gemv_x_column<WARPS, XU>(c * XU + u, B, K, kc);
        xh[u] = k >= 0 ? __ldcg(reinterpret_cast<const uint4*>(x + (size_t)gb * K + k)) : make_uint4(0, 0, 0, 0);
    }
}

// The mma steps of one tile row group from a stage (chunk C, len columns) with x from registers.
template <int C, bool X_BF16, int WARPS, int XU, int XF>
__device__ __forceinline__ void gemv_reg_steps(float (&acc)[2][4], const uint4 (&xh)[XF], const uint4 (&xl)[XF],
                                               const unsigned char* wrow, int len) {
    const int warp = threadIdx.x >> 5, t = threadIdx.x & 3;
#pragma unroll
    for (int u = 0; u < XU; ++u) {
        const int j = warp + u * WARPS, col = j * GEMV_STEP_K + 8 * t;
        if (j * GEMV_STEP_K >= len) break;  // warp-uniform: the mma needs every lane
        uint4 wv = make_uint4(0, 0, 0, 0);
        if (col < len) wv = *reinterpret_cast<const uint4*>(wrow + 2 * col);
        const uint4 h = xh[C * XU + u], l = X_BF16 ? make_uint4(0, 0, 0, 0) : xl[C * XU + u];
        const unsigned a0[4] = {h.x, l.x, h.y, l.y}, a1[4] = {h.z, l.z, h.w, l.w};
        mma_bf16_16816(acc[0], a0, wv.x, wv.y);
        mma_bf16_16816(acc[1], a1, wv.z, wv.w);
    }
}

// Launch: grid ≤ tiles (sched: ≤ ceil(tiles / tps)), (WARPS + 1)·32 threads, dynamic shared memory
// (shared_bytes in gemv.py) 256 + 2·WARPS·256 + 32·WARPS + B·S·2·(X_BF16 ? 1 : 2) (XU > 0: 0), rounded
// up to 128, + STAGES·stage with stage = tps·8·2·K (kc = K) or 8·(2·kc + 64) (kc < K, tps = 1). Needs K % 8 == 0,
// kc % 8 == 0 and w 16-byte aligned (the launcher checks). Arguments as gemv, and:
// sched null: block b streams the tiles [tiles·b/grid, tiles·(b+1)/grid). sched [2] int32, zero at launch
// (and left zero): block b starts with group b (tps tiles), then takes the next group from the counter
// sched[0] until none is left, so a block that started late (the previous kernel held its SM) or was
// slowed takes fewer; the last block to finish resets both counters (sched[1] counts finished blocks).
// EPI = GEMV_ROPE: w is the fused wq | wk | wv, out unused; pos … theta as GemvRope (N = (H + 2·Hkv)·Dh).
// next / next_bytes (16-byte aligned): once a block's producer has issued its last copy it pulls the
// block's share of the first next_bytes of next (the next launch's weights) into L2 (0: none).
// XU, XC: x in registers (above; XU = 0: x staged in shared memory and read per step; XC = 0: passes,
// above: sched is ignored, ceil(tiles / grid) ≤ GEMV_PASS_TILES, and the shared memory holds
// GEMV_PASS_TILES·WARPS·256 bytes of sums where x would be staged).
template <int EPI, bool NORM, bool X_BF16, int WARPS, int STAGES, int XU, int XC>
__global__ void __launch_bounds__((WARPS + 1) * 32, 1)
    gemv_bulk(const void* __restrict__ x,   // x: [B, K] f32 (X_BF16: bf16), B ≤ 8
              const float* __restrict__ g,  // g: [K] f32 RMSNorm weight (NORM), else unused
              const bf16* __restrict__ w,   // w: [N, K] bf16 (SWIGLU: w1 rows 0…F−1, w3 rows F…2F−1)
              void* __restrict__ out,       // out: [B, N] f32 (STORE, ADD), [B, F] f32 or bf16 (SWIGLU)
              int B, int N, int K, float eps,
              int kc,                      // kc: columns per stage (K: whole rows)
              int tps,                     // tps: tiles per stage (1 unless kc = K)
              int* __restrict__ sched,     // sched: [2] int32 or null (see above)
              const int* __restrict__ pos, const int* __restrict__ slot, bf16* __restrict__ q_out,
              const unsigned long long* __restrict__ cache, const int* __restrict__ ring, int H, int Hkv,
              int Dh, float theta,  // ROPE only (GemvRope), else unused
              const bf16* __restrict__ next,  // next: any device buffer of ≥ next_bytes bytes, or unused
              unsigned long long next_bytes) {
    static_assert(!(NORM && X_BF16), "the RMSNorm prologue takes f32 x");
    static_assert(EPI != GEMV_ROPE || (!X_BF16), "the ROPE epilogue follows the qkv projection of f32 h");
    static_assert(STAGES >= 2 && STAGES <= 8, "the shared-memory header holds 8 stages");
    static_assert(XU >= 0 && XC >= 0 && XC <= 3, "x in registers: up to 3 chunks, or passes (XC = 0)");
    constexpr bool PASSES = XU > 0 && XC == 0;
    static_assert(!PASSES || (X_BF16 && !NORM), "passes take bf16 x without a norm");
    constexpr int XF = XU > 0 ? XU * (PASSES ? 1 : XC) : 1;  // x fragments a lane holds
    if constexpr (PASSES) sched = nullptr;  // a static share: every pass walks the same tiles
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char gemv_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool whole = kc >= K;
    const int S = gemv_x_stride(K), chunks = whole ? 1 : (K + kc - 1) / kc;
    const int stage_bytes = whole ? tps * GEMV_TILE * 2 * K : GEMV_TILE * (2 * kc + 64);
    const int tiles = gemv_swiglu(EPI) ? (N / 2 + 3) / 4 : (N + GEMV_TILE - 1) / GEMV_TILE;
    const int t0 = sched ? 0 : (int)((long long)tiles * blockIdx.x / gridDim.x);
    const int t1 = sched ? tiles : (int)((long long)tiles * (blockIdx.x + 1) / gridDim.x);
    if (t0 == t1) return;  // the whole block
    unsigned long long* bars = reinterpret_cast<unsigned long long*>(gemv_smem);  // full[STAGES], empty[STAGES]
    int2* work = reinterpret_cast<int2*>(gemv_smem + 128);  // [STAGES] first tile, tiles (producer → consumers)
    float2* part = reinterpret_cast<float2*>(gemv_smem + 256);                     // [2][WARPS][32]
    float* red = reinterpret_cast<float*>(part + 2 * WARPS * 32);                   // [8][WARPS]
    bf16* xh = reinterpret_cast<bf16*>(red + GEMV_MAX_B * WARPS);                   // [B, S]
    bf16* xl = xh + (size_t)B * S;                                                  // [B, S] (f32 x)
    float* gs = reinterpret_cast<float*>(xh);  // x in registers, NORM: [K] f32 copy of g where x would be staged
    float2* pass_sums = reinterpret_cast<float2*>(xh);  // passes: [GEMV_PASS_TILES][WARPS][32]
    const size_t x_end = PASSES ? (size_t)(reinterpret_cast<unsigned char*>(pass_sums + GEMV_PASS_TILES * WARPS * 32) - gemv_smem)
                       : XU > 0 ? (size_t)(reinterpret_cast<unsigned char*>(gs + (NORM ? K : 0)) - gemv_smem)
                                : (size_t)(reinterpret_cast<unsigned char*>(xl + (X_BF16 ? 0 : (size_t)B * S)) - gemv_smem);
    const int groups = (t1 - t0 + tps - 1) / tps;  // passes: stages a pass takes
    if (XU > 0 && ((PASSES ? t1 - t0 > GEMV_PASS_TILES : chunks > XC) || (kc + GEMV_STEP_K - 1) / GEMV_STEP_K > XU * WARPS))
        __trap();  // the launcher's bug
    unsigned char* stage_base = gemv_smem + (x_end + 127) / 128 * 128;
    const unsigned stages = smem_addr(stage_base), full = smem_addr(bars), empty = full + 8 * STAGES;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) mbar_init(full + 8 * s, 1), mbar_init(empty + 8 * s, WARPS);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (warp == WARPS) {  // the producer: weights only, so no pdl_wait
        // The whole warp walks the stages (lane 0 waits, claims and arrives); a stage of row copies has
        // lane i issue row i's copy, so its GEMV_TILE copies go out together, not ~100 ns apart.
        int first = sched ? (int)blockIdx.x * tps : t0, n_tiles = 0;
        for (int it = 0;; ++it) {
            const int s = it % STAGES, r = it / STAGES, c = PASSES ? it / groups : it % chunks;
            if constexpr (PASSES) first = c < chunks ? t0 + it % groups * tps : t1;
            else if (c == 0 && it > 0) {
                int next = 0;
                if (sched && lane == 0) next = atomicAdd(sched, 1);
                first = sched ? (__shfl_sync(0xffffffffu, next, 0) + (int)gridDim.x) * tps : first + tps;
            }
            const bool done = first >= t1;
            n_tiles = done ? 0 : min(tps, t1 - first);
            const unsigned bar = full + 8 * s, dst = stages + (unsigned)(s * stage_bytes);
            if (r > 0) mbar_wait(empty + 8 * s, (r - 1) & 1);
            if (lane == 0) work[s] = make_int2(done ? -1 : first, n_tiles);
            if (done) {  // the consumers' end mark: a stage with no bytes
                if (lane == 0) mbar_arrive(bar);
                break;
            }
            if (whole) {
                if (lane == 0) {
                    if constexpr (gemv_swiglu(EPI)) {
                        const int F = N / 2, f0 = first * 4, nf = min(F, f0 + 4 * n_tiles) - f0;
                        const unsigned bytes = 2u * nf * K;
                        mbar_expect_tx(bar, 2 * bytes);
                        bulk_copy(dst, w + (size_t)f0 * K, bytes, bar);
                        bulk_copy(dst + 4 * tps * 2 * K, w + (size_t)(F + f0) * K, bytes, bar);
                    } else {
                        const int n0 = first * GEMV_TILE, nr = min(N, n0 + GEMV_TILE * n_tiles) - n0;
                        const unsigned bytes = 2u * nr * K;
                        mbar_expect_tx(bar, bytes);
                        bulk_copy(dst, w + (size_t)n0 * K, bytes, bar);
                    }
                }
            } else {
                const int k0 = c * kc;
                const unsigned bytes = 2 * min(kc, K - k0);
                const int row = lane < GEMV_TILE ? gemv_tile_row<EPI>(first, lane, N) : -1;
                const unsigned n_rows = __popc(__ballot_sync(0xffffffffu, row >= 0));
                if (lane == 0) mbar_expect_tx(bar, bytes * n_rows);
                __syncwarp();  // the stage's bytes are expected before any of its copies lands
                if (row >= 0) bulk_copy(dst + lane * (2 * kc + 64), w + (size_t)row * K + k0, bytes, bar);
            }
        }
        if (lane == 0) {
            if (next_bytes) {  // its loads are out: warm this block's share of the next launch's weights
                const unsigned long long per = (next_bytes / gridDim.x + 15) & ~15ull;
                const unsigned long long lo = per * blockIdx.x, hi = min(next_bytes & ~15ull, lo + per);
                for (unsigned long long b = lo; b < hi; b += 65536)
                    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n"
                                 ::"l"(reinterpret_cast<const char*>(next) + b), "r"((unsigned)min(65536ull, hi - b))
                                 : "memory");
            }
            if (sched && atomicAdd(sched + 1, 1) == (int)gridDim.x - 1) {  // no block takes from sched[0] now
                atomicExch(sched, 0);
                atomicExch(sched + 1, 0);
            }
        }
        return;
    }

    if constexpr (XU > 0 && NORM) {  // g is a weight: copied before the wait (K % 8 == 0, g 16-byte aligned)
        for (int k = 4 * (int)threadIdx.x; k < K; k += 4 * WARPS * 32)
            *reinterpret_cast<float4*>(gs + k) = *reinterpret_cast<const float4*>(g + k);
    }
    pdl_wait();  // x (and out, for ADD) come from earlier kernels
    pdl_launch_dependents();
    uint4 xrh[XF], xrl[XF], xnh[PASSES ? XU : 1];  // xnh: the next pass's fragments
    if constexpr (PASSES) {
        gemv_x_chunk<WARPS, XU>(static_cast<const bf16*>(x), xrh, 0, B, K, kc);
        if (chunks > 1) gemv_x_chunk<WARPS, XU>(static_cast<const bf16*>(x), xnh, 1, B, K, kc);
    } else if constexpr (XU > 0) {
        gemv_x_fragments<NORM, X_BF16, WARPS, XU, XC>(x, gs, xrh, xrl, red, B, K, kc);
    } else {
        gemv_stage_x<NORM, X_BF16, WARPS>(x, g, xh, xl, red, B, K, S);
    }
    consumers_sync(WARPS);
    const int gb = lane >> 2, t = lane & 3;
    float scale = 1.0f;
    if constexpr (NORM) {
        if (gb < B) {
            float ss = 0.0f;
            for (int i = 0; i < WARPS; ++i) ss += red[gb * WARPS + i];
            scale = rsqrtf(ss / (float)K + eps);
        }
    }
    const bool row_ok = gb < B;
    const GemvRope rope{pos, slot, q_out, cache, ring, H, Hkv, Dh, theta};
    float acc[2][4] = {};
    for (int it = 0, ti = 0;; ++it) {  // ti: tiles this block has finished
        const int s = it % STAGES, r = it / STAGES, c = PASSES ? it / groups : it % chunks, k0 = c * kc;
        mbar_wait(full + 8 * s, r & 1);
        const int2 wk = work[s];  // written before the producer's arrive (release), read after the wait
        if (wk.x < 0) break;
        const int len = min(kc, K - k0), steps = (len + GEMV_STEP_K - 1) / GEMV_STEP_K;
        for (int i = 0; i < wk.y; ++i) {
            const unsigned char* wrow = stage_base + (size_t)s * stage_bytes + gemv_bulk_row<EPI>(i, gb, K, kc, tps);
            if constexpr (PASSES) {
                gemv_reg_steps<0, X_BF16, WARPS, XU>(acc, xrh, xrl, wrow, len);
            } else if constexpr (XU > 0) {
                if (c == 0) {
                    gemv_reg_steps<0, X_BF16, WARPS, XU>(acc, xrh, xrl, wrow, len);
                } else if constexpr (XC > 1) {
                    if (c == 1)
                        gemv_reg_steps<1, X_BF16, WARPS, XU>(acc, xrh, xrl, wrow, len);
                    else if constexpr (XC > 2)
                        gemv_reg_steps<2, X_BF16, WARPS, XU>(acc, xrh, xrl, wrow, len);
                }
            } else {
#pragma unroll 4
                for (int j = warp; j < steps; j += WARPS) {
                    const int col = j * GEMV_STEP_K + 8 * t;
                    uint4 wv = make_uint4(0, 0, 0, 0), h = make_uint4(0, 0, 0, 0), l = make_uint4(0, 0, 0, 0);
                    if (col < len) wv = *reinterpret_cast<const uint4*>(wrow + 2 * col);
                    if (row_ok) {
                        h = *reinterpret_cast<const uint4*>(xh + (size_t)gb * S + k0 + col);
                        if constexpr (!X_BF16) l = *reinterpret_cast<const uint4*>(xl + (size_t)gb * S + k0 + col);
                    }
                    const unsigned a0[4] = {h.x, l.x, h.y, l.y}, a1[4] = {h.z, l.z, h.w, l.w};
                    mma_bf16_16816(acc[0], a0, wv.x, wv.y);
                    mma_bf16_16816(acc[1], a1, wv.z, wv.w);
                }
            }
            if constexpr (PASSES) {  // this (tile, chunk)'s sums into the tile's slot (each lane its own)
                float2* q = pass_sums + (wk.x + i - t0) * WARPS * 32 + warp * 32 + lane;
                float2 v = make_float2(acc[0][0] + acc[0][2] + acc[1][0] + acc[1][2],
                                       acc[0][1] + acc[0][3] + acc[1][1] + acc[1][3]);
                if (c > 0) v.x += q->x, v.y += q->y;
                *q = v;
#pragma unroll
                for (int u = 0; u < 4; ++u) acc[0][u] = acc[1][u] = 0.0f;
            }
            if (c + 1 < chunks) continue;
            // Tile done: partials to slot ti % 2 (passes: the tile's slot), one barrier, warp ti % WARPS
            // sums and writes.
            float2* p = PASSES ? pass_sums + (wk.x + i - t0) * WARPS * 32 : part + (ti & 1) * WARPS * 32;
            if constexpr (!PASSES) {
                p[warp * 32 + lane] = make_float2(acc[0][0] + acc[0][2] + acc[1][0] + acc[1][2],
                                                  acc[0][1] + acc[0][3] + acc[1][1] + acc[1][3]);
#pragma unroll
                for (int q = 0; q < 4; ++q) acc[0][q] = acc[1][q] = 0.0f;
            }
            consumers_sync(WARPS);
            if (warp == ti % WARPS)
                gemv_epilogue<EPI, WARPS>(reinterpret_cast<float*>(p), wk.x + i, scale, out, B, N, rope);
            ++ti;
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(empty + 8 * s);
        if constexpr (PASSES) {  // a pass done: the next one's fragments in, the one after that loading
            if (it % groups == groups - 1 && c + 1 < chunks) {
#pragma unroll
                for (int u = 0; u < XU; ++u) xrh[u] = xnh[u];
                if (c + 2 < chunks) gemv_x_chunk<WARPS, XU>(static_cast<const bf16*>(x), xnh, c + 2, B, K, kc);
            }
        }
    }
#endif
}
