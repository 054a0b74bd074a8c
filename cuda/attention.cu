// Causal sliding-window GQA attention over ring KV caches (SPEC §3.5, §5).
// Query t at position p = pos[t] sees keys j with max(0, p−W+1) ≤ j ≤ p, key j stored in row j % R of
// a ring cache [R, Hkv, Dh] bf16. Scale 1/√Dh, softmax in f32 (log2 domain:
// scores are pre-multiplied by log2(e)/√Dh and exponentiated with exp2), output bf16 [T, H, Dh].
//
// attention_split: flash-decoding for few queries (the decoder step), one launch. Query t belongs to
// slot c = slot[t] (or c = t with a null slot: tables laid out per row), whose caches are at cache[c]
// (K, V addresses) with ring[c] rows; a slot whose ring is shorter than W sees at most ring[c] keys.
// Grid (S, Hkv, T) is
// fixed, so a captured graph replays unchanged at any position: the n visible keys of a query are cut
// at run time into n_act = min(S, ceil(n / min_keys)) equal splits and blocks past them leave at
// once. Each split's block streams its keys (16-byte loads straight into tensor-core fragments, two
// register sets per warp so that its next 16 keys load while these are used: 238 registers, 2 blocks
// per SM, 81 % of the copy bandwidth at B = 64 and 500 keys on an H200 against 68 % single-buffered;
// attention_split). attention_split_light (8 keys a step, one register set, ≤ 104 registers) is small enough (13 K registers a block) to sit beside a bulk GEMV block (52 K)
// on an SM, so in the decoder step its blocks may start, and load their first keys, while the qkv
// GEMV still runs, and the wo GEMV's blocks beside them (not yet measured: decoder.LIGHT_ATTENTION),
// leaves an (acc, max, sum) partial per query head in the workspace and counts itself in with an
// atomic; the last to arrive merges the n_act partials, writes the output and resets the counter. A
// query whose keys fit one split writes its output directly. early (the decoder step: pos and every key
// but the query's own position come from earlier launches): the split's first 16 keys per warp, all but
// the newest, load before pdl_wait, so only q and the newest key wait for the kernel before (H200, step
// at B = 1: −41 µs at position 5000, −7 at 500; warming the wo weights in L2 from here cost +60 µs).
// attention_tiled: flash-attention-2 for T consecutive queries of one slot (the encoder), bf16 tensor
// cores through mma.sync m16n8k16, K/V tiles double-buffered with cp.async, only the key tiles inside
// the block's window visited. With a tile table (tiles non-null) one launch serves the runs of many
// slots: block x takes tile x = (first row, rows ≤ BM, slot, position of the first row) and finds the
// slot's caches through cache [C, 2] / ring [C] like attention_split; a tile of 0 rows leaves at once,
// so a captured graph replays one fixed grid for any mix of runs. A PDL launch finds its tile and caches
// before it waits for the kernel before it.
#include "attention.cuh"

// One split of one (query, kv head): keys lo + k0 … lo + k1 − 1. Each warp takes steps of 16 keys
// (warp w: steps w, w + NWARP, …) and runs its own online softmax; the warps are merged in shared
// memory at the end. ~150 registers leave room for 3 blocks per SM, whose 12 warps keep 96 KB of K/V
// rows in flight. Tensor cores, mma m16n8k16 (lane = 4·gi + tq):
// · S = Q·Kᵀ, Q's G ≤ 8 heads as rows (rows ≥ G zero), 8 keys per n-tile. A head dim's order inside
//   a dot product is free, so lane (gi, tq) loads 16 contiguous bytes of key gi, dims 32u + 8tq … +7,
//   and takes them as the B fragments of k-steps 2u, 2u+1; Q's A fragments are read the same way.
// · Oᵀ = Vᵀ·Pᵀ: P's C-fragment layout (head gi, keys 2tq, 2tq+1) is already Pᵀ's B fragment. Vᵀ's A
//   fragments come from the same 16-byte loads as K, transposed per 8×8 block by movmatrix: word j of
//   the chunk loaded for (key half kh, u) is block (u, j), whose column 2tq + x is dim 32u + 8tq + 2j + x;
//   after the transpose, row gi of block (u, j) is dim 32u + 8·(gi/2) + 2j + gi%2. M-tile (u, hh) has
//   blocks (u, 2hh), (u, 2hh + 1) as rows 0–7, 8–15; its C holds Oᵀ[dim][heads 2tq, 2tq + 1].
template <int DH, int G, int NH, bool DB>
__device__ __forceinline__ void
    attention_split_body(const bf16* __restrict__ q,        // q: [T, H, DH] bf16, H = Hkv·G
                    const unsigned long long* __restrict__ cache,  // cache: [C, 2] K, V [R_c, Hkv, DH] bf16
                    const int* __restrict__ ring,      // ring: [C] int32 R_c
                    const int* __restrict__ pos,       // pos: [T] int32
                    const int* __restrict__ slot,      // slot: [T] int32, or null: slot t
                    float* __restrict__ ws,            // ws: [T, Hkv, split_row] f32, counters zero
                    bf16* __restrict__ out,            // out: [T, H, DH] bf16
                    int Hkv, int window, int min_keys,
                    int early) {                       // early: only key p is new (see above)
    static_assert(G <= 8 && DH % 32 == 0, "heads per kv head ≤ 8, head dim a multiple of 32");
    using Warp = SplitWarp<DH, G, NH>;
    constexpr int NWARP = SPLIT_THREADS / 32, NU = Warp::NU, STEP = Warp::STEP, STRIDE = STEP * NWARP;
    const int split = blockIdx.x, hk = blockIdx.y, t = blockIdx.z, S = gridDim.x;
    const int H = Hkv * G, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gi = lane >> 2, tq = lane & 3;
    // slot, cache and ring are written by the host between launches, never by a kernel: read them first.
    const int sb = slot ? slot[t] : t, R = ring[sb], W = min(window, R);
    const bf16* k_cache = reinterpret_cast<const bf16*>(cache[2 * sb]);
    const bf16* v_cache = reinterpret_cast<const bf16*>(cache[2 * sb + 1]);
    // early: pos and every key but the newest (position p, written by the kernel before) were written
    // by earlier launches, so the split's first keys load before pdl_wait; else everything waits.
    int p = 0, lo = 0, n = 0, n_act = 0, k0 = 0, k1 = 0, row0 = 0;
    auto bounds = [&]() {
        p = pos[t];
        lo = max(0, p - W + 1), n = p - lo + 1;  // visible keys lo … p
        const int want = min(S, (n + min_keys - 1) / min_keys), per = (n + want - 1) / want;
        n_act = (n + per - 1) / per;  // splits holding keys; the others leave now
        k0 = split * per, k1 = min(n, k0 + per);
        row0 = lo % R;
    };
    uint4 ka[NH][NU], va[NH][NU];
    int kb = 0;
    if (early) {
        bounds();
        if (split >= n_act) return;
        kb = k0 + STEP * warp;
        if (kb < k1) Warp::template load<false>(ka, va, k_cache, v_cache, kb, min(k1, n - 1), row0, R, Hkv, hk);
    }
    pdl_wait();  // q (and pos and the newest key unless early) come from the kernels before this one
    pdl_launch_dependents();
    uint4 qa[NU];  // issued before pos: independent of it
#pragma unroll
    for (int u = 0; u < NU; ++u) {
        qa[u] = make_uint4(0, 0, 0, 0);
        if (gi < G) qa[u] = *reinterpret_cast<const uint4*>(q + ((size_t)t * H + hk * G + gi) * DH + (4 * u + tq) * 8);
    }
    if (!early) {
        bounds();
        if (split >= n_act) return;
        kb = k0 + STEP * warp;
        if (kb < k1) Warp::template load<false>(ka, va, k_cache, v_cache, kb, k1, row0, R, Hkv, hk);
    } else if (kb <= n - 1 && n - 1 < min(k1, kb + STEP)) {  // the newest key is in the first step
        const int key = n - 1;
        int r = row0 + key;
        r -= r >= R ? R : 0;
        const size_t off = ((size_t)r * Hkv + hk) * DH + tq * 8;
#pragma unroll
        for (int h = 0; h < NH; ++h)
            if (kb + 8 * h + gi == key) {
#pragma unroll
                for (int u = 0; u < NU; ++u) {
                    ka[h][u] = ld_nc16(k_cache + off + 32 * u);
                    va[h][u] = ld_nc16(v_cache + off + 32 * u);
                }
            }
    }
    const float scale = 1.44269504088896341f * rsqrtf((float)DH);
    float m = NEG_INF, l = 0.f, o[NU][2][4];
#pragma unroll
    for (int u = 0; u < NU; ++u)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) o[u][hh][0] = o[u][hh][1] = o[u][hh][2] = o[u][hh][3] = 0.f;
    Warp::template sweep<false, STRIDE, DB>(m, l, o, qa, ka, va, k_cache, v_cache, kb, k1, row0, R, Hkv, hk, scale);
    // Merge the warps: each leaves (max, sum, acc) per head in shared memory.
    __shared__ float sm[NWARP][G], sl[NWARP][G];
    __shared__ __align__(16) float sacc[NWARP][G][DH];
    __shared__ bool last;
    Warp::to_shared(m, l, o, &sm[warp][0], &sl[warp][0], &sacc[warp][0][0]);
    __syncthreads();
    // Partials of (t, hk): acc [S][G][DH] | (max, sum) [S][G] | arrival counter.
    float* row = ws + ((size_t)t * Hkv + hk) * ((S * G * (DH + 2) + 4) & ~3);
    float* pml = row + (size_t)S * G * DH;
    unsigned* counter = reinterpret_cast<unsigned*>(pml + 2 * S * G);
    bf16* o_t = out + ((size_t)t * H + hk * G) * DH;
    Warp::template combine<NWARP, SPLIT_THREADS>(&sm[0][0], &sl[0][0], &sacc[0][0][0], n_act, split, row, pml, o_t);
    if (n_act == 1) return;
    __threadfence();  // this block's partials are visible before the count says so
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == (unsigned)(n_act - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    Warp::template merge<SPLIT_THREADS>(row, pml, n_act, o_t);
    if (threadIdx.x == 0) *counter = 0u;  // ready for the next launch or graph replay
}

#define ATTENTION_SPLIT_PARAMS                                                                              \
    const bf16 *__restrict__ q, const unsigned long long *__restrict__ cache, const int *__restrict__ ring, \
        const int *__restrict__ pos, const int *__restrict__ slot, float *__restrict__ ws,                  \
        bf16 *__restrict__ out, int Hkv, int window, int min_keys, int early
template <int DH, int G>
__global__ void __launch_bounds__(SPLIT_THREADS) attention_split(ATTENTION_SPLIT_PARAMS) {
    attention_split_body<DH, G, 2, true>(q, cache, ring, pos, slot, ws, out, Hkv, window, min_keys, early);
}
// The light instance: 8 keys a warp step, one register set, at most 104 registers (13 K a block: it fits
// an SM beside a bulk GEMV block's 52 K; see above).
template <int DH, int G>
__global__ void __maxnreg__(104) attention_split_light(ATTENTION_SPLIT_PARAMS) {
    attention_split_body<DH, G, 1, false>(q, cache, ring, pos, slot, ws, out, Hkv, window, min_keys, early);
}


// ---- attention_tiled ----
// Block: NW warps of MT·16 query rows each (BM = 16·MT·NW rows) × one head; key tiles of BN rows; MINB
// blocks per SM asked of the register allocator (cuda/README.md: the shapes timed on the H200). Each
// K/V fragment read from shared memory feeds MT row tiles, which halves shared-memory traffic per
// FLOP at MT = 2 (the limit at MT = 1). Shared-memory rows are DH bf16 = DH/8 chunks of 16 bytes;
// chunk c of row r is stored at chunk c ^ (r & 7) so that the 8 row addresses of an ldmatrix hit 8
// different bank groups.
template <int DH>
__device__ __forceinline__ int swz(int row, int c) {
    return row * DH + ((c ^ (row & 7)) << 3);
}

template <int DH, int NW, int MT, int BN, int MINB>
__global__ void __launch_bounds__(NW * 32, MINB)
    attention_tiled(const bf16* __restrict__ q,        // q: [T, H, DH] bf16, queries at positions p0 … p0+T−1
                    const bf16* __restrict__ k_cache,  // k_cache: [B, R, Hkv, DH] bf16
                    const bf16* __restrict__ v_cache,  // v_cache: [B, R, Hkv, DH] bf16
                    bf16* __restrict__ out,            // out: [T, H, DH] bf16
                    int T, int H, int Hkv, int R, int W, int p0, int b,
                    const int4* __restrict__ tiles,    // tiles: [gridDim.x] (first row, rows, slot, p), or null
                    const unsigned long long* __restrict__ cache,  // cache: [C, 2] K, V [R_c, Hkv, DH] bf16
                    const int* __restrict__ ring) {    // ring: [C] int32 R_c
    constexpr int BM = 16 * MT * NW, CH = DH / 8, NT = NW * 32;
    __shared__ __align__(128) bf16 sQ[BM * DH];
    __shared__ __align__(128) bf16 sK[2][BN * DH];
    __shared__ __align__(128) bf16 sV[2][BN * DH];
    const int h = blockIdx.y, hk = h / (H / Hkv), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int m0 = blockIdx.x * BM;
    if (tiles) {  // this block's tile: rows first … first + rows − 1 of q, one slot's positions p …
        const int4 tile = tiles[blockIdx.x];
        if (tile.y <= 0) return;
        q += (size_t)tile.x * H * DH;
        out += (size_t)tile.x * H * DH;
        T = tile.y, p0 = tile.w, R = ring[tile.z], b = 0, m0 = 0;
        k_cache = reinterpret_cast<const bf16*>(cache[2 * tile.z]);
        v_cache = reinterpret_cast<const bf16*>(cache[2 * tile.z + 1]);
    }
    pdl_wait();  // q and the caches' new rows come from rope_qkv (the tile table, caches, ring: the host's)
    pdl_launch_dependents();
    const int last = min(T, m0 + BM) - 1;
    const int pfirst = p0 + m0, plast = p0 + last;  // positions of the block's first and last real query
    const int kstart = max(0, pfirst - W + 1), n_tiles = (plast - kstart) / BN + 1;
    const size_t kv_base = (size_t)b * R;

    for (int idx = threadIdx.x; idx < BM * CH; idx += NT) {
        const int r = idx / CH, c = idx % CH;
        const bool ok = m0 + r < T;
        const bf16* src = ok ? q + ((size_t)(m0 + r) * H + h) * DH + c * 8 : q;
        cp_async16(smem_addr(sQ + swz<DH>(r, c)), src, ok);
    }
    auto load_kv = [&](int n, int stage) {
        for (int idx = threadIdx.x; idx < BN * CH; idx += NT) {
            const int r = idx / CH, c = idx % CH, j = kstart + n * BN + r;
            const bool ok = j <= plast;  // rows past the last query are zero-filled (never NaN)
            const size_t off = ok ? ((kv_base + (size_t)(j % R)) * Hkv + hk) * DH + c * 8 : 0;
            cp_async16(smem_addr(&sK[stage][swz<DH>(r, c)]), k_cache + off, ok);
            cp_async16(smem_addr(&sV[stage][swz<DH>(r, c)]), v_cache + off, ok);
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    const float sl = 1.44269504088896341f * rsqrtf((float)DH);
    const int g = lane >> 2, tq = lane & 3;  // mma fragment coordinates
    const int row0 = warp * 16 * MT + g;      // block row of this thread's first fragment row
    float o[MT][DH / 8][4];
    float m_r[MT][2], l_r[MT][2];
    unsigned qa[MT][DH / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        m_r[mt][0] = m_r[mt][1] = NEG_INF;
        l_r[mt][0] = l_r[mt][1] = 0.f;
#pragma unroll
        for (int i = 0; i < DH / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    }

    for (int n = 0; n < n_tiles; ++n) {
        cp_async_wait<0>();
        __syncthreads();  // tile n landed for everyone, and everyone is done with tile n−1's stage
        if (n + 1 < n_tiles) {
            load_kv(n + 1, (n + 1) & 1);
            cp_async_commit();
        }
        if (n == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int kk = 0; kk < DH / 16; ++kk)
                    ldmatrix_x4(qa[mt][kk],
                                smem_addr(sQ + swz<DH>(warp * 16 * MT + mt * 16 + (lane & 15), kk * 2 + (lane >> 4))));
        }
        const bf16* k = sK[n & 1];
        const bf16* v = sV[n & 1];
        float s[MT][BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < DH / 16; kk += 2) {
                unsigned kb[4];
                ldmatrix_x4(kb, smem_addr(k + swz<DH>(nt * 8 + (lane & 7), kk * 2 + (lane >> 3))));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_bf16_16816(s[mt][nt], qa[mt][kk], kb[0], kb[1]);
                    mma_bf16_16816(s[mt][nt], qa[mt][kk + 1], kb[2], kb[3]);
                }
            }
        }
        // Mask only the tiles that cross the window's lower edge or the causal diagonal for some row.
        const int ka = kstart + n * BN;
        if (ka + BN - 1 > pfirst || ka <= p0 + m0 + BM - 1 - W) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int kj = ka + nt * 8 + 2 * tq + (e & 1), qp = p0 + m0 + row0 + mt * 16 + (e >> 1) * 8;
                        if (kj > qp || kj <= qp - W) s[mt][nt][e] = NEG_INF;
                    }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                float mx = NEG_INF;
#pragma unroll
                for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float mn = fmaxf(m_r[mt][r], mx * sl);
                const float mu = mn == NEG_INF ? 0.f : mn;  // a row with no visible key yet
                const float alpha = fast_exp2(m_r[mt][r] - mu);
                m_r[mt][r] = mn;
                float rs = 0.f;
#pragma unroll
                for (int nt = 0; nt < BN / 8; ++nt) {
                    s[mt][nt][2 * r] = fast_exp2(fmaf(s[mt][nt][2 * r], sl, -mu));
                    s[mt][nt][2 * r + 1] = fast_exp2(fmaf(s[mt][nt][2 * r + 1], sl, -mu));
                    rs += s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
                }
                l_r[mt][r] = l_r[mt][r] * alpha + rs;
#pragma unroll
                for (int i = 0; i < DH / 8; ++i) o[mt][i][2 * r] *= alpha, o[mt][i][2 * r + 1] *= alpha;
            }
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            unsigned pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                pa[mt][0] = cvt_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = cvt_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = cvt_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = cvt_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dt = 0; dt < DH / 8; dt += 2) {
                unsigned vb[4];
                ldmatrix_x4_trans(vb, smem_addr(v + swz<DH>(kk * 16 + (lane & 15), dt + (lane >> 4))));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_bf16_16816(o[mt][dt], pa[mt], vb[0], vb[1]);
                    mma_bf16_16816(o[mt][dt + 1], pa[mt], vb[2], vb[3]);
                }
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float l = l_r[mt][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = 1.f / l;
            const int row = m0 + row0 + mt * 16 + r * 8;
            if (row < T) {
                bf16* dst = out + ((size_t)row * H + h) * DH + 2 * tq;
#pragma unroll
                for (int dt = 0; dt < DH / 8; ++dt)
                    *reinterpret_cast<unsigned*>(dst + dt * 8) =
                        cvt_bf16x2(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
            }
        }
    }
}

