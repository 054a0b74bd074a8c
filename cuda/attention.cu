// Causal sliding-window GQA attention over ring KV caches (SPEC §3.5, §5).
// Query t at position p = pos[t] of stream b sees keys j with max(0, p−W+1) ≤ j ≤ p, key j stored in
// slot j % R of k_cache/v_cache [B, R, Hkv, Dh] bf16. Scale 1/√Dh, softmax in f32 (log2 domain:
// scores are pre-multiplied by log2(e)/√Dh and exponentiated with exp2), output bf16 [T, H, Dh].
//
// attention_split + attention_combine: flash-decoding for few queries (the decoder step). Grid
// (n_splits, Hkv, T); split s covers keys lo + s·CHUNK … lo + (s+1)·CHUNK − 1 (lo = max(0, p−W+1)), so
// n_splits = ceil(W / CHUNK) blocks serve any position and a captured graph replays unchanged; blocks
// past p write an empty partial and leave. Every K/V row of a chunk is loaded up front (16 bytes per
// thread, DH/8 lanes per key) so the whole chunk is in flight at once.
// attention_tiled: flash-attention-2 for T consecutive queries of one stream (the encoder), bf16 tensor
// cores through mma.sync m16n8k16, K/V tiles double-buffered with cp.async, only the key tiles inside
// the block's window visited.
#include "common.cuh"

#define NEG_INF (-__int_as_float(0x7f800000))

constexpr int SPLIT_THREADS = 128;

template <int DH, int G, int CHUNK>
__global__ void __launch_bounds__(SPLIT_THREADS)
    attention_split(const bf16* __restrict__ q,        // q: [T, H, DH] bf16, H = Hkv·G
                    const bf16* __restrict__ k_cache,  // k_cache: [B, R, Hkv, DH] bf16
                    const bf16* __restrict__ v_cache,  // v_cache: [B, R, Hkv, DH] bf16
                    const int* __restrict__ pos,       // pos: [T] int32
                    const int* __restrict__ stream,    // stream: [T] int32
                    float* __restrict__ ws,            // ws: [T, H, n_splits, DH+2] f32: acc | max | sum
                    int Hkv, int R, int W) {
    constexpr int NWARP = SPLIT_THREADS / 32, LPK = DH / 8, KPW = 32 / LPK, KPI = KPW * NWARP;
    constexpr int NK = CHUNK / KPI;  // keys per thread
    static_assert(CHUNK % KPI == 0, "CHUNK must be a multiple of the keys per iteration");
    const int split = blockIdx.x, hk = blockIdx.y, t = blockIdx.z, n_splits = gridDim.x;
    const int H = Hkv * G, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int p = pos[t], sb = stream[t];  // both loads issued together
    const int lo = max(0, p - W + 1), k0 = lo + split * CHUNK;
    const size_t gstride = (size_t)n_splits * (DH + 2);
    float* part = ws + (((size_t)t * H + hk * G) * n_splits + split) * (DH + 2);  // + g·gstride
    if (k0 > p) {
        if (threadIdx.x < G) part[threadIdx.x * gstride + DH] = NEG_INF, part[threadIdx.x * gstride + DH + 1] = 0.f;
        return;
    }
    const int sub = lane % LPK, kid = warp * KPW + lane / LPK;  // dims sub·8…+7 of key kid + i·KPI
    const size_t b_base = (size_t)sb * R;
    uint4 kr[NK], vr[NK];
#pragma unroll
    for (int i = 0; i < NK; ++i) {
        const int j = k0 + i * KPI + kid;
        const size_t off = ((b_base + (size_t)(j % R)) * Hkv + hk) * DH + sub * 8;
        kr[i] = vr[i] = make_uint4(0, 0, 0, 0);
        if (j <= p) {
            kr[i] = *reinterpret_cast<const uint4*>(k_cache + off);
            vr[i] = *reinterpret_cast<const uint4*>(v_cache + off);
        }
    }
    const float scale = 1.44269504088896341f * rsqrtf((float)DH);
    float qf[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const uint4 u = *reinterpret_cast<const uint4*>(q + ((size_t)t * H + hk * G + g) * DH + sub * 8);
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) qf[g][2 * e] = bf16_lo(w[e]) * scale, qf[g][2 * e + 1] = bf16_hi(w[e]) * scale;
    }
    float s[NK][G], mx[G];
#pragma unroll
    for (int g = 0; g < G; ++g) mx[g] = NEG_INF;
#pragma unroll
    for (int i = 0; i < NK; ++i) {
        const unsigned w[4] = {kr[i].x, kr[i].y, kr[i].z, kr[i].w};
        const bool valid = k0 + i * KPI + kid <= p;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float d = 0.f;
#pragma unroll
            for (int e = 0; e < 4; ++e) d = fmaf(qf[g][2 * e], bf16_lo(w[e]), fmaf(qf[g][2 * e + 1], bf16_hi(w[e]), d));
#pragma unroll
            for (int o = LPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
            s[i][g] = valid ? d : NEG_INF;
            mx[g] = fmaxf(mx[g], s[i][g]);
        }
    }
    __shared__ float red[NWARP][G];
    __shared__ __align__(16) float sacc[NWARP][G][DH];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const float m = warp_max(mx[g]);
        if (lane == 0) red[warp][g] = m;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
        mx[g] = red[0][g];
#pragma unroll
        for (int w = 1; w < NWARP; ++w) mx[g] = fmaxf(mx[g], red[w][g]);
    }
    float acc[G][8], l[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        l[g] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < NK; ++i) {
        const unsigned w[4] = {vr[i].x, vr[i].y, vr[i].z, vr[i].w};
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float pr = fast_exp2(s[i][g] - mx[g]);  // 0 for masked keys (s = −inf, mx finite)
            l[g] += sub == 0 ? pr : 0.f;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                acc[g][2 * e] = fmaf(pr, bf16_lo(w[e]), acc[g][2 * e]);
                acc[g][2 * e + 1] = fmaf(pr, bf16_hi(w[e]), acc[g][2 * e + 1]);
            }
        }
    }
    // Sum over the KPW keys of a warp (lanes with the same `sub`), then over warps in shared memory.
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
        for (int o = LPK; o < 32; o <<= 1) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
        }
        l[g] = warp_sum(l[g]);
    }
    __syncthreads();  // red[] reads done before it is reused for l
    if (lane < LPK) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float4* dst = reinterpret_cast<float4*>(&sacc[warp][g][sub * 8]);
            dst[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
            dst[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
        }
    }
    if (lane == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) red[warp][g] = l[g];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * DH; idx += SPLIT_THREADS) {
        const int g = idx / DH, d = idx % DH;
        float a = 0.f;
#pragma unroll
        for (int w = 0; w < NWARP; ++w) a += sacc[w][g][d];
        part[g * gstride + d] = a;
    }
    if (threadIdx.x < G) {
        const int g = threadIdx.x;
        float ls = 0.f;
#pragma unroll
        for (int w = 0; w < NWARP; ++w) ls += red[w][g];
        part[g * gstride + DH] = mx[g];
        part[g * gstride + DH + 1] = ls;
    }
}

// Merges the partials of attention_split. Grid (H, T), block (DH/4)·COMBINE_ROWS threads. Pass 1 finds
// the largest partial max; pass 2 sums the rescaled partials, each thread owning 4 dims and every
// COMBINE_ROWS-th split (independent loads, no loop-carried rescaling); rows are merged in shared memory.
constexpr int COMBINE_ROWS = 16;

template <int DH>
__global__ void __launch_bounds__(DH / 4 * COMBINE_ROWS)
    attention_combine(const float* __restrict__ ws,  // ws: [T, H, n_splits, DH+2] f32 from attention_split
                      const int* __restrict__ pos,   // pos: [T] int32
                      bf16* __restrict__ out,        // out: [T, H, DH] bf16
                      int n_splits, int W, int chunk) {
    constexpr int TPR = DH / 4, NT = TPR * COMBINE_ROWS;  // threads per split row, per block
    const int h = blockIdx.x, t = blockIdx.y, H = gridDim.x;
    const int d4 = threadIdx.x % TPR, row = threadIdx.x / TPR, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int p = pos[t], n_active = min(n_splits, (p - max(0, p - W + 1)) / chunk + 1);
    const float* base = ws + ((size_t)t * H + h) * n_splits * (DH + 2);
    __shared__ float red[NT / 32], sl[COMBINE_ROWS];
    __shared__ float4 sa[COMBINE_ROWS][TPR];
    float m = NEG_INF;
    for (int s = threadIdx.x; s < n_active; s += NT) m = fmaxf(m, base[(size_t)s * (DH + 2) + DH]);
    m = warp_max(m);
    if (lane == 0) red[warp] = m;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < NT / 32; ++w) m = fmaxf(m, red[w]);  // every active partial max is finite
    float l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int s = row; s < n_active; s += COMBINE_ROWS) {
        const float* ps = base + (size_t)s * (DH + 2);
        // A record is DH+2 floats, so only 8-byte alignment holds for every split.
        const float2 a01 = reinterpret_cast<const float2*>(ps)[2 * d4];
        const float2 a23 = reinterpret_cast<const float2*>(ps)[2 * d4 + 1];
        const float c = fast_exp2(ps[DH] - m);
        l = fmaf(c, ps[DH + 1], l);
        acc = make_float4(fmaf(c, a01.x, acc.x), fmaf(c, a01.y, acc.y), fmaf(c, a23.x, acc.z), fmaf(c, a23.y, acc.w));
    }
    if (d4 == 0) sl[row] = l;
    sa[row][d4] = acc;
    __syncthreads();
    if (row == 0) {
        float lt = 0.f;
        float4 at = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int r = 0; r < COMBINE_ROWS; ++r) {
            const float4 a = sa[r][d4];
            lt += sl[r];
            at.x += a.x, at.y += a.y, at.z += a.z, at.w += a.w;
        }
        const float inv = 1.f / lt;
        uint2* o = reinterpret_cast<uint2*>(out + ((size_t)t * H + h) * DH) + d4;
        *o = make_uint2(pack_bf16x2(at.x * inv, at.y * inv), pack_bf16x2(at.z * inv, at.w * inv));
    }
}

// ---- attention_tiled ----
// Block: NW warps of MT·16 query rows each (BM = 16·MT·NW rows) × one head; key tiles of BN rows. Each
// K/V fragment read from shared memory feeds MT row tiles, which halves shared-memory traffic per
// FLOP at MT = 2 (the limit at MT = 1). Shared-memory rows are DH bf16 = DH/8 chunks of 16 bytes;
// chunk c of row r is stored at chunk c ^ (r & 7) so that the 8 row addresses of an ldmatrix hit 8
// different bank groups.
template <int DH>
__device__ __forceinline__ int swz(int row, int c) {
    return row * DH + ((c ^ (row & 7)) << 3);
}

template <int DH, int NW, int MT>
__global__ void __launch_bounds__(NW * 32)
    attention_tiled(const bf16* __restrict__ q,        // q: [T, H, DH] bf16, queries at positions p0 … p0+T−1
                    const bf16* __restrict__ k_cache,  // k_cache: [B, R, Hkv, DH] bf16
                    const bf16* __restrict__ v_cache,  // v_cache: [B, R, Hkv, DH] bf16
                    bf16* __restrict__ out,            // out: [T, H, DH] bf16
                    int T, int H, int Hkv, int R, int W, int p0, int b) {
    constexpr int BM = 16 * MT * NW, BN = DH == 64 ? 64 : 32, CH = DH / 8, NT = NW * 32;
    __shared__ __align__(128) bf16 sQ[BM * DH];
    __shared__ __align__(128) bf16 sK[2][BN * DH];
    __shared__ __align__(128) bf16 sV[2][BN * DH];
    const int h = blockIdx.y, hk = h / (H / Hkv), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int m0 = blockIdx.x * BM, last = min(T, m0 + BM) - 1;
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

#ifdef VOXTRAL_NVCC_CHECK
template __global__ void attention_split<128, 4, 64>(const bf16*, const bf16*, const bf16*, const int*, const int*,
                                                     float*, int, int, int);
template __global__ void attention_split<64, 8, 32>(const bf16*, const bf16*, const bf16*, const int*, const int*,
                                                    float*, int, int, int);
template __global__ void attention_combine<128>(const float*, const int*, bf16*, int, int, int);
template __global__ void attention_combine<64>(const float*, const int*, bf16*, int, int, int);
#define TILED(DH, NW, MT)                                                                                       \
    template __global__ void attention_tiled<DH, NW, MT>(const bf16*, const bf16*, const bf16*, bf16*, int, int, \
                                                         int, int, int, int, int)
TILED(64, 4, 1);
TILED(64, 4, 2);
TILED(128, 4, 1);
#endif
