// decoder_layers: every decoder layer of a step of B ≤ 8 rows (SPEC §5) in one persistent launch, so that
// the weights stream from device memory without the ~130 kernel boundaries of a chain of GEMVs
// (voxtral/gpu/layers.py launches it; the embedding before it and the output head after it stay
// separate launches).
//
// One block per SM, all resident at once (grid = SMs, one block's shared memory fills an SM), each of
// WARPS consumer warps and one producer warp. The producer streams the block's share of every weight
// matrix of every layer, in the order the consumers use them, into a ring of 16 KB shared-memory stages
// with TMA: one 4-D tensor-map load per stage, 8 weight rows × 1 024 columns, counted on the stage's
// "full" mbarrier. It reads no activation, so it runs a whole ring ahead of the consumers, through the
// grid barriers and the attention phase: while the consumers wait, the next weights keep loading.
// The consumers run each layer as phases with a grid barrier between two phases:
//   qkv        x = RMSNorm(h) (attention_norm); q, k, v = x·Wqkvᵀ; RoPE on q, k; q → q, k and v → row
//              pos % ring of the row's KV caches (gemv's ROPE epilogue)
//   attention  flash-decoding: items (row, kv head, split) over the blocks, 16-key steps per warp
//              (SplitWarp, as attention_split), the last split of a (row, kv head) to arrive merges
//   wo         h += o·Woᵀ
//   w13        u = bf16(silu(x·W1ᵀ) ⊙ (x·W3ᵀ)), x = RMSNorm(h) (ffn_norm)
//   w2         h += u·W2ᵀ
// A GEMV phase is gemv_bulk's arithmetic: x staged in shared memory (f32 x as bf16 hi and lo rows, the
// RMSNorm scale applied per row at the end), mma.sync m16n8k16 with 8 weight rows as the n8 operand, the
// warps' partial sums of a tile combined in shared memory, gemv.cuh's epilogues. Block b takes the tile
// range of rank (b + 37·(4·layer + matrix)) mod grid of each matrix, so the extra tiles of the uneven
// splits fall on different blocks from one matrix to the next.
// Stage layout: a weight [N, K] is a 4-D tensor {64 columns, N/2 row pairs (2 rows apart), 2 row
// parities (1 row apart), K/64 column chunks (128 bytes apart)}, box {64, 4, 2, 16}: per 64-column
// chunk the tile's rows 0 2 4 6 1 3 5 7 as eight 128-byte lines in the 128-byte swizzle. SwiGLU's
// [w1; w3] is {64, F features, 2 halves (F rows apart), K/64}: per chunk the gate rows of the tile's 4
// features, then their up rows. Lane group g (the mma's B column g: tile row g, or the gate (g even) or
// up (g odd) row of feature g/2) reads line (g & 1)·4 + g/2; the swizzle permutes a line's 16-byte units
// by its line number, so the 8 lanes of a shared-memory phase (g = 2p, 2p + 1: lines p and p + 4) fall
// on 8 different bank groups.
// Grid barriers: a counter in global memory, each block's consumers arrive once (release) and wait for
// all (acquire); the last block to finish resets it, as the attention merge resets its counters, so a
// captured graph replays unchanged. Everything another block writes during the launch (h, q, o, u, the
// newest keys, attention partials) is read through L2 (ld.global.cg).
// Needs: sm_90 (TMA, mbarrier transaction counts), every K (D, H·DH, F) a multiple of 64 and N of 8;
// the launcher checks.
#include "attention.cuh"
#include "gemv.cuh"

constexpr int LAYERS_CHUNKS = 16;                             // 64-column chunks of a stage
constexpr int LAYERS_COLS = 64 * LAYERS_CHUNKS;               // columns of a stage
constexpr int LAYERS_STAGE = GEMV_TILE * LAYERS_COLS * 2;     // bytes of a stage
constexpr int LAYERS_MAX_STAGES = 16;

// Shared memory ahead of the stages: mbarriers, partial sums, RMSNorm sums, a flag (the launcher's
// shared_bytes mirrors this).
template <int WARPS>
struct LayersHeader {
    static constexpr int BARS = 0, PART = 16 * LAYERS_MAX_STAGES, RED = PART + 2 * WARPS * 32 * 8;
    static constexpr int FLAG = RED + GEMV_MAX_B * WARPS * 4, SCRATCH = FLAG + 16;
};

// Instrumentation (dev/layers_trace.py): the global nanosecond clock, and where a traced launch records it.
__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
    return t;
}
// trace (null: none): per block 2·TRACE_BARRIERS consumer times (arrival at grid barrier k, its passing),
// then 4·L producer times (first copy of each weight), then the producer's and consumer warp 0's total
// waits (ns) on a full ring / an empty stage.
constexpr int TRACE_BARRIERS = 160;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// The 4-D box at coordinates (c0, c1, c2, c3) of a tensor map → shared memory at dst, counted on bar.
__device__ __forceinline__ void tma_load_4d(unsigned dst, const TensorMap* map, int c0, int c1, int c2, int c3,
                                            unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
        "%5}], [%6];\n" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
}

// Every block's consumers arrive at the count (release) and wait until it reaches target (acquire).
__device__ __forceinline__ void grid_barrier(unsigned* count, unsigned target, int warps,
                                             unsigned long long* trace = nullptr) {
    consumers_sync(warps);
    if (threadIdx.x == 0) {
        if (trace) trace[0] = global_ns();
        __threadfence();
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(count) : "memory");
        unsigned seen;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(seen) : "l"(count) : "memory");
        } while (seen < target);
        __threadfence();
        if (trace) trace[1] = global_ns();
    }
    consumers_sync(warps);
}
#endif

// The tiles [t0, t1) of a matrix of `tiles` tiles that this block takes (see the rotation above).
__device__ __forceinline__ void layers_share(int tiles, int layer, int matrix, int& t0, int& t1) {
    const int g = gridDim.x, rank = (int)((blockIdx.x + 37ll * (4 * layer + matrix)) % g);
    t0 = (int)((long long)tiles * rank / g);
    t1 = (int)((long long)tiles * (rank + 1) / g);
}

// The stages a block loads, in order: (layer, matrix, tile, 1 024-column chunk); layer = L past the end.
struct StageWalk {
    int layer = 0, mtx = 0, tile = 0, t1 = 0, c = 0, chunks = 1;
    // Onto the first stage at or after (layer, mtx), skipping matrices where the block has no tiles.
    __device__ void settle(const int* tiles, const int* ks, int L, bool fresh = true) {
        for (; layer < L; fresh = true) {
            if (fresh) {
                layers_share(tiles[mtx], layer, mtx, tile, t1);
                c = 0, chunks = (ks[mtx] + LAYERS_COLS - 1) / LAYERS_COLS;
            }
            if (tile < t1) return;
            if (++mtx == 4) mtx = 0, ++layer;
        }
    }
    __device__ void next(const int* tiles, const int* ks, int L) {
        if (++c < chunks) return;
        c = 0;
        if (++tile < t1) return;
        if (++mtx == 4) mtx = 0, ++layer;
        settle(tiles, ks, L);
    }
};

// x [B, K] (NORM: f32 with the RMSNorm weight g; else bf16) → shared memory; returns the RMSNorm scale of
// batch row lane/4 (1 without NORM). Consumer warps only.
template <bool NORM, int WARPS>
__device__ __forceinline__ float layers_stage_x(const void* x, const float* g, bf16* xh, bf16* xl, float* red, int B,
                                                int K, float eps) {
    gemv_stage_x<NORM, !NORM, WARPS>(x, g, xh, xl, red, B, K, gemv_x_stride(K));
    consumers_sync(WARPS);
    const int gb = (threadIdx.x & 31) >> 2;
    float scale = 1.0f;
    if (NORM && gb < B) {
        float ss = 0.0f;
        for (int i = 0; i < WARPS; ++i) ss += red[gb * WARPS + i];
        scale = rsqrtf(ss / (float)K + eps);
    }
    return scale;
}

// One GEMV phase: the tiles [t0, t1) of a [N, K] weight from the stage ring (stage counter it), epilogue
// EPI into out. X_BF16: x is bf16 (no lo rows).
template <int EPI, bool X_BF16, int WARPS>
__device__ __forceinline__ void layers_gemv(const unsigned char* ring, unsigned full, int stages, int& it, int& ti,
                                            int t0, int t1, int K, const bf16* xh, const bf16* xl, int B, int N,
                                            float scale, void* out, float2* part, const GemvRope& rope,
                                            unsigned long long* waited, int flags) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int line = (g & 1) * 4 + (g >> 1), S = gemv_x_stride(K);
    const unsigned empty = full + 8 * LAYERS_MAX_STAGES;
    constexpr int UN = LAYERS_COLS / GEMV_STEP_K / WARPS;  // steps of a stage per warp
    static_assert(UN * WARPS * GEMV_STEP_K == LAYERS_COLS, "the warps share a stage's steps evenly");
    const int chunks = (K + LAYERS_COLS - 1) / LAYERS_COLS;
    int s = it % stages, phase = it / stages & 1;  // the stage and its fill parity (it counts stages)
    const int row = min(g, B - 1);  // lanes past B read row B − 1 (in bounds) and zero it
    const bf16* xh_row = xh + (size_t)row * S + 8 * t;
    const bf16* xl_row = xl + (size_t)row * S + 8 * t;
    for (int tile = t0; tile < t1; ++tile) {
        float acc[UN][2][4] = {};  // an accumulator pair per step of a stage: UN independent mma chains
        for (int c = 0; c < chunks; ++c, ++it) {
            const int k0 = c * LAYERS_COLS, steps = min(LAYERS_COLS, K - k0) / GEMV_STEP_K;
            if (waited && threadIdx.x == 0) {
                const unsigned long long t = global_ns();
                mbar_wait<true>(full + 8 * s, phase);
                *waited += global_ns() - t;
            } else {
                mbar_wait<true>(full + 8 * s, phase);
            }
            const unsigned char* st = ring + (size_t)s * LAYERS_STAGE + line * 128;
            if (flags & 1) {
            } else if (steps == UN * WARPS) {  // a whole stage: every load issued before the products
                uint4 wv[UN], h[UN], l[UN];
#pragma unroll
                for (int u = 0; u < UN; ++u) {
                    const int j = warp + u * WARPS, unit = ((j & 1) << 2) + t;
                    wv[u] = *reinterpret_cast<const uint4*>(st + (j >> 1) * 1024 + ((unit ^ line) << 4));
                    h[u] = *reinterpret_cast<const uint4*>(xh_row + k0 + j * GEMV_STEP_K);
                    l[u] = X_BF16 ? make_uint4(0, 0, 0, 0) : *reinterpret_cast<const uint4*>(xl_row + k0 + j * GEMV_STEP_K);
                }
#pragma unroll
                for (int u = 0; u < UN; ++u) {
                    if (g >= B) h[u] = l[u] = make_uint4(0, 0, 0, 0);  // rows past B: zeros (a select)
                    const unsigned a0[4] = {h[u].x, l[u].x, h[u].y, l[u].y}, a1[4] = {h[u].z, l[u].z, h[u].w, l[u].w};
                    mma_bf16_16816(acc[u][0], a0, wv[u].x, wv[u].y);
                    mma_bf16_16816(acc[u][1], a1, wv[u].z, wv[u].w);
                }
            } else {
#pragma unroll
                for (int u = 0; u < UN; ++u) {
                    const int j = warp + u * WARPS;
                    if (j < steps) {
                        const int unit = ((j & 1) << 2) + t;
                        const uint4 wv = *reinterpret_cast<const uint4*>(st + (j >> 1) * 1024 + ((unit ^ line) << 4));
                        uint4 h = *reinterpret_cast<const uint4*>(xh_row + k0 + j * GEMV_STEP_K), l = make_uint4(0, 0, 0, 0);
                        if constexpr (!X_BF16) l = *reinterpret_cast<const uint4*>(xl_row + k0 + j * GEMV_STEP_K);
                        if (g >= B) h = l = make_uint4(0, 0, 0, 0);
                        const unsigned a0[4] = {h.x, l.x, h.y, l.y}, a1[4] = {h.z, l.z, h.w, l.w};
                        mma_bf16_16816(acc[u][0], a0, wv.x, wv.y);
                        mma_bf16_16816(acc[u][1], a1, wv.z, wv.w);
                    }
                }
            }
            __syncwarp();
            if (lane == 0) mbar_arrive(empty + 8 * s);
            if (++s == stages) s = 0, phase ^= 1;
        }
        float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
        for (int u = 0; u < UN; ++u)
            y0 += acc[u][0][0] + acc[u][0][2] + acc[u][1][0] + acc[u][1][2],
            y1 += acc[u][0][1] + acc[u][0][3] + acc[u][1][1] + acc[u][1][3];
        // Tile done: partials to slot ti % 2, one barrier, warp ti % WARPS sums and writes.
        float2* p = part + (ti & 1) * WARPS * 32;
        p[warp * 32 + lane] = make_float2(y0, y1);
        if (flags & 2) continue;
        consumers_sync(WARPS);
        if (warp == ti % WARPS) gemv_epilogue<EPI, WARPS>(reinterpret_cast<float*>(p), tile, scale, out, B, N, rope);
        ++ti;
    }
}

// The attention phase of one layer: items (row t, kv head hk, split) over the blocks; a split of n keys
// gives each warp 16-key steps (so a split has at least 16·WARPS keys unless the window is shorter).
// Not inlined: its registers (four sets of K/V fragments) would otherwise push the GEMV loops' state
// into local memory.
template <int DH, int G, int WARPS>
__device__ __noinline__ void layers_attention(const bf16* q, const unsigned long long* cache, const int* ring,
                                                 const int* pos, float* ws, bf16* out, int B, int Hkv, int window,
                                                 int splits, unsigned char* scratch, volatile int* flag) {
    using Warp = SplitWarp<DH, G>;
    constexpr int NU = Warp::NU, STEP = Warp::STEP, STRIDE = STEP * WARPS, THREADS = WARPS * 32;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gi = lane >> 2, tq = lane & 3, H = Hkv * G;
    float* sacc = reinterpret_cast<float*>(scratch);  // [WARPS][G][DH]
    float* sm = sacc + WARPS * G * DH;                 // [WARPS][G]
    float* sl = sm + WARPS * G;                        // [WARPS][G]
    const float scale = 1.44269504088896341f * rsqrtf((float)DH);
    const int items = B * Hkv * splits, row_floats = (splits * G * (DH + 2) + 4) & ~3;
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        const int t = item / (Hkv * splits), hk = item / splits % Hkv, split = item % splits;
        const int R = ring[t], W = min(window, R), p = pos[t];
        const int lo = max(0, p - W + 1), n = p - lo + 1;
        const int want = min(splits, (n + STRIDE - 1) / STRIDE), per = (n + want - 1) / want;
        const int n_act = (n + per - 1) / per;
        if (split >= n_act) continue;  // the whole block
        const int k0 = split * per, k1 = min(n, k0 + per), row0 = lo % R;
        const bf16* k_cache = reinterpret_cast<const bf16*>(cache[2 * t]);
        const bf16* v_cache = reinterpret_cast<const bf16*>(cache[2 * t + 1]);
        uint4 qa[NU];
#pragma unroll
        for (int u = 0; u < NU; ++u) {
            qa[u] = make_uint4(0, 0, 0, 0);
            if (gi < G)
                qa[u] = __ldcg(reinterpret_cast<const uint4*>(q + ((size_t)t * H + hk * G + gi) * DH + (4 * u + tq) * 8));
        }
        float m = NEG_INF, l = 0.f, o[NU][2][4];
#pragma unroll
        for (int u = 0; u < NU; ++u)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) o[u][hh][0] = o[u][hh][1] = o[u][hh][2] = o[u][hh][3] = 0.f;
        uint4 ka[2][NU], va[2][NU];
        int kb = k0 + STEP * warp;
        if (kb < k1) Warp::template load<true>(ka, va, k_cache, v_cache, kb, k1, row0, R, Hkv, hk);
        Warp::template sweep<true, STRIDE>(m, l, o, qa, ka, va, k_cache, v_cache, kb, k1, row0, R, Hkv, hk, scale);
        Warp::to_shared(m, l, o, sm + warp * G, sl + warp * G, sacc + warp * G * DH);
        consumers_sync(WARPS);
        float* row = ws + ((size_t)t * Hkv + hk) * row_floats;
        float* pml = row + (size_t)splits * G * DH;
        unsigned* counter = reinterpret_cast<unsigned*>(pml + 2 * splits * G);
        bf16* o_t = out + ((size_t)t * H + hk * G) * DH;
        Warp::template combine<WARPS, THREADS>(sm, sl, sacc, n_act, split, row, pml, o_t);
        if (n_act > 1) {
            __threadfence();  // this block's partials are visible before the count says so
            consumers_sync(WARPS);
            if (threadIdx.x == 0) *flag = atomicAdd(counter, 1u) == (unsigned)(n_act - 1);
            consumers_sync(WARPS);
            if (*flag) {
                __threadfence();
                Warp::template merge<THREADS>(row, pml, n_act, o_t);
                if (threadIdx.x == 0) *counter = 0u;  // ready for the next layer, launch or replay
            }
        }
        consumers_sync(WARPS);  // the shared memory is free for the next item
    }
}

// Launch: grid = SMs (every block resident: one per SM), (WARPS + 1)·32 threads, dynamic shared memory
// 1024 (alignment) + LayersHeader::SCRATCH + scratch + stages·LAYERS_STAGE with scratch the larger of
// the staged x (max over K ∈ {D (f32: hi and lo rows), H·DH, F (bf16)} of B·gemv_x_stride(K)·2 bytes per
// row set) and the attention merge (WARPS·G·(DH + 2)·4), rounded up to 16. A PDL launch: weights load
// before pdl_wait. h: [B, D] f32, in place (from the embedding); q, o: [B, H, DH] bf16 scratch; u: [B, F]
// bf16 scratch; ws: zeroed attention workspace [B, Hkv, split_row(splits)] f32; sync: [2] uint32, zero
// (left zero). next / next_bytes: the output head's weights, of which the producers warm the first
// next_bytes in L2 once their own loads are out (0: none).
template <int DH, int G, int WARPS>
__global__ void __launch_bounds__((WARPS + 1) * 32, 1)
    decoder_layers(const TensorMap* __restrict__ maps,             // maps: [L, 4] qkv, wo, w13, w2 (above)
                   const unsigned long long* __restrict__ norms,   // norms: [L, 2] f32 [D] attention, ffn
                   const unsigned long long* __restrict__ caches,  // caches: [L, C, 2] K, V ring addresses
                   int cache_rows,                                 // C ≥ B: rows of a layer's table
                   const int* __restrict__ ring,                   // ring: [B] int32 ring rows
                   const int* __restrict__ pos,                    // pos: [B] int32 positions
                   float* h, bf16* q, bf16* o, bf16* u, float* ws, unsigned* sync, int B, int L, int D, int Hkv,
                   int F, int window, int splits, float eps, float theta, int stages,
                   const bf16* __restrict__ next, unsigned long long next_bytes,
                   unsigned long long* trace,  // trace: null, or instrumentation (above)
                   int flags) {                // flags: 0 (dev/layers_trace.py: 1 no products, 2 no epilogues, 4 no sync)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    using Hd = LayersHeader<WARPS>;
    extern __shared__ __align__(128) unsigned char layers_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, H = Hkv * G, QD = H * DH;
    const int NQKV = QD + 2 * Hkv * DH;
    float2* part = reinterpret_cast<float2*>(layers_smem + Hd::PART);
    float* red = reinterpret_cast<float*>(layers_smem + Hd::RED);
    volatile int* flag = reinterpret_cast<volatile int*>(layers_smem + Hd::FLAG);
    unsigned char* scratch = layers_smem + Hd::SCRATCH;
    const int x_rows = B * gemv_x_stride(D) * 2 * 2, x_qd = B * gemv_x_stride(QD) * 2, x_f = B * gemv_x_stride(F) * 2;
    const int scratch_bytes = (max(max(x_rows, x_qd), max(x_f, WARPS * G * (DH + 2) * 4)) + 15) & ~15;
    const unsigned scratch_end = smem_addr(scratch + scratch_bytes), ring0 = (scratch_end + 1023) & ~1023u;
    const unsigned char* ring_base = scratch + scratch_bytes + (ring0 - scratch_end);
    const unsigned full = smem_addr(layers_smem + Hd::BARS), empty = full + 8 * LAYERS_MAX_STAGES;
    if (threadIdx.x == 0) {
        for (int s = 0; s < stages; ++s) mbar_init(full + 8 * s, 1), mbar_init(empty + 8 * s, WARPS);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    const int tiles[4] = {NQKV / GEMV_TILE, D / GEMV_TILE, F / 4, D / GEMV_TILE};
    const int ks[4] = {D, QD, D, F};
    unsigned long long* tr = trace ? trace + (size_t)blockIdx.x * (2 * TRACE_BARRIERS + 4 * L + 2) : nullptr;

    if (warp == WARPS) {  // the producer: weights only, so no pdl_wait
        if (lane == 0) {
            unsigned long long waited = 0;
            StageWalk load{};
            load.settle(tiles, ks, L);
            for (int it = 0, seen = -1; load.layer < L; ++it) {
                const int s = it % stages, r = it / stages, m = 4 * load.layer + load.mtx;
                if (tr && m != seen) tr[2 * TRACE_BARRIERS + m] = global_ns(), seen = m;
                if (r > 0) {
                    const unsigned long long t = tr ? global_ns() : 0;
                    mbar_wait<true>(empty + 8 * s, (r - 1) & 1);
                    if (tr) waited += global_ns() - t;
                }
                mbar_expect_tx(full + 8 * s, LAYERS_STAGE);
                tma_load_4d(ring0 + s * LAYERS_STAGE, maps + m, 0, 4 * load.tile, 0, load.c * LAYERS_CHUNKS, full + 8 * s);
                load.next(tiles, ks, L);
            }
            if (tr) tr[2 * TRACE_BARRIERS + 4 * L] = waited;
            if (next_bytes) {  // its loads are out: warm this block's share of the output head in L2
                const unsigned long long per = (next_bytes / gridDim.x + 15) & ~15ull;
                const unsigned long long lo = per * blockIdx.x, hi = min(next_bytes & ~15ull, lo + per);
                for (unsigned long long b = lo; b < hi; b += 65536)
                    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(
                                     reinterpret_cast<const char*>(next) + b),
                                 "r"((unsigned)min(65536ull, hi - b))
                                 : "memory");
            }
        }
        return;
    }

    pdl_wait();  // h (the embedding), pos and the KV tables come from earlier launches
    bf16* xh = reinterpret_cast<bf16*>(scratch);
    int it = 0, ti = 0;
    unsigned passed = 0;  // grid barriers passed
    unsigned long long waited = 0;
    unsigned long long* wait_sum = tr ? &waited : nullptr;
    if (tr && threadIdx.x == 0) tr[0] = global_ns();  // "barrier 0": the consumers start
    auto barrier = [&]() {
        ++passed;
        if (!(flags & 4)) grid_barrier(sync, passed * gridDim.x, WARPS, tr && passed < TRACE_BARRIERS ? tr + 2 * passed : nullptr);
    };
    const GemvRope none{};
    for (int layer = 0; layer < L; ++layer) {
        const unsigned long long* cache = caches + (size_t)layer * cache_rows * 2;
        const float* attention_norm = reinterpret_cast<const float*>(norms[2 * layer]);
        const float* ffn_norm = reinterpret_cast<const float*>(norms[2 * layer + 1]);
        int t0, t1;
        if (layer > 0) barrier();
        {  // qkv with RoPE into q and the KV caches
            bf16* xl = xh + (size_t)B * gemv_x_stride(D);
            const float scale = layers_stage_x<true, WARPS>(h, attention_norm, xh, xl, red, B, D, eps);
            const GemvRope rope{pos, nullptr, q, cache, ring, H, Hkv, DH, theta};
            layers_share(tiles[0], layer, 0, t0, t1);
            layers_gemv<GEMV_ROPE, false, WARPS>(ring_base, full, stages, it, ti, t0, t1, D, xh, xl, B, NQKV, scale,
                                                 nullptr, part, rope, wait_sum, flags);
        }
        barrier();
        if (!(flags & 4)) layers_attention<DH, G, WARPS>(q, cache, ring, pos, ws, o, B, Hkv, window, splits, scratch, flag);
        barrier();
        {  // wo: h += o·Woᵀ
            const float scale = layers_stage_x<false, WARPS>(o, nullptr, xh, xh, red, B, QD, eps);
            layers_share(tiles[1], layer, 1, t0, t1);
            layers_gemv<GEMV_ADD, true, WARPS>(ring_base, full, stages, it, ti, t0, t1, QD, xh, xh, B, D, scale, h,
                                               part, none, wait_sum, flags);
        }
        barrier();
        {  // w13: u = silu(x·W1ᵀ) ⊙ (x·W3ᵀ)
            bf16* xl = xh + (size_t)B * gemv_x_stride(D);
            const float scale = layers_stage_x<true, WARPS>(h, ffn_norm, xh, xl, red, B, D, eps);
            layers_share(tiles[2], layer, 2, t0, t1);
            layers_gemv<GEMV_SWIGLU_BF16, false, WARPS>(ring_base, full, stages, it, ti, t0, t1, D, xh, xl, B, 2 * F,
                                                        scale, u, part, none, wait_sum, flags);
        }
        barrier();
        if (layer == L - 1) pdl_launch_dependents();
        {  // w2: h += u·W2ᵀ
            const float scale = layers_stage_x<false, WARPS>(u, nullptr, xh, xh, red, B, F, eps);
            layers_share(tiles[3], layer, 3, t0, t1);
            layers_gemv<GEMV_ADD, true, WARPS>(ring_base, full, stages, it, ti, t0, t1, F, xh, xh, B, D, scale, h,
                                               part, none, wait_sum, flags);
        }
    }
    consumers_sync(WARPS);
    if (tr && threadIdx.x == 0) tr[2 * TRACE_BARRIERS + 4 * L + 1] = waited, tr[1] = global_ns();
    if (threadIdx.x == 0) {  // the last block out resets the barrier counts (every block passed them all)
        __threadfence();
        if (atomicAdd(sync + 1, 1u) == gridDim.x - 1) {
            atomicExch(sync, 0u);
            atomicExch(sync + 1, 0u);
        }
    }
#endif
}
