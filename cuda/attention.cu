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
    const int p = pos[t], lo = max(0, p - W + 1), k0 = lo + split * CHUNK;
    const size_t gstride = (size_t)n_splits * (DH + 2);
    float* part = ws + (((size_t)t * H + hk * G) * n_splits + split) * (DH + 2);  // + g·gstride
    if (k0 > p) {
        if (threadIdx.x < G) part[threadIdx.x * gstride + DH] = NEG_INF, part[threadIdx.x * gstride + DH + 1] = 0.f;
        return;
    }
    const int sub = lane % LPK, kid = warp * KPW + lane / LPK;  // dims sub·8…+7 of key kid + i·KPI
    const size_t b_base = (size_t)stream[t] * R;
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
            const float pr = exp2f(s[i][g] - mx[g]);  // 0 for masked keys (s = −inf, mx finite)
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

// Merges the partials of attention_split. Grid (H, T), block (DH/4)·COMBINE_ROWS threads: each
// thread owns 4 dims and every COMBINE_ROWS-th split; the rows are merged in shared memory.
constexpr int COMBINE_ROWS = 8;

template <int DH>
__global__ void __launch_bounds__(DH / 4 * COMBINE_ROWS)
    attention_combine(const float* __restrict__ ws,  // ws: [T, H, n_splits, DH+2] f32 from attention_split
                      const int* __restrict__ pos,   // pos: [T] int32
                      bf16* __restrict__ out,        // out: [T, H, DH] bf16
                      int n_splits, int W, int chunk) {
    constexpr int TPR = DH / 4;  // threads per split row
    const int h = blockIdx.x, t = blockIdx.y, H = gridDim.x;
    const int d4 = threadIdx.x % TPR, row = threadIdx.x / TPR;
    const int p = pos[t], n_active = min(n_splits, (p - max(0, p - W + 1)) / chunk + 1);
    const float* base = ws + ((size_t)t * H + h) * n_splits * (DH + 2);
    float m = NEG_INF, l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s = row; s < n_active; s += COMBINE_ROWS) {
        const float* ps = base + (size_t)s * (DH + 2);
        const float ms = ps[DH], ls = ps[DH + 1];
        // A record is DH+2 floats, so only 8-byte alignment holds for every split.
        const float2 a01 = reinterpret_cast<const float2*>(ps)[2 * d4], a23 = reinterpret_cast<const float2*>(ps)[2 * d4 + 1];
        const float4 a = make_float4(a01.x, a01.y, a23.x, a23.y);
        const float mn = fmaxf(m, ms);
        const float c_old = exp2f(m - mn), c_new = exp2f(ms - mn);  // m may be −inf; ms is finite
        l = l * c_old + ls * c_new;
        acc = make_float4(acc.x * c_old + a.x * c_new, acc.y * c_old + a.y * c_new, acc.z * c_old + a.z * c_new,
                          acc.w * c_old + a.w * c_new);
        m = mn;
    }
    __shared__ float sm[COMBINE_ROWS], sl[COMBINE_ROWS];
    __shared__ float4 sa[COMBINE_ROWS][TPR];
    if (d4 == 0) sm[row] = m, sl[row] = l;
    sa[row][d4] = acc;
    __syncthreads();
    if (row == 0) {
        float mt = sm[0];
#pragma unroll
        for (int r = 1; r < COMBINE_ROWS; ++r) mt = fmaxf(mt, sm[r]);
        float lt = 0.f;
        float4 at = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int r = 0; r < COMBINE_ROWS; ++r) {
            const float c = sm[r] == NEG_INF ? 0.f : exp2f(sm[r] - mt);
            const float4 a = sa[r][d4];
            lt += sl[r] * c;
            at.x += a.x * c, at.y += a.y * c, at.z += a.z * c, at.w += a.w * c;
        }
        const float inv = 1.f / lt;
        uint2* o = reinterpret_cast<uint2*>(out + ((size_t)t * H + h) * DH) + d4;
        *o = make_uint2(pack_bf16x2(at.x * inv, at.y * inv), pack_bf16x2(at.z * inv, at.w * inv));
    }
}

// ---- attention_tiled ----
// Block: NW warps, BM = 16·NW query rows × one head; key tiles of BN rows. Shared-memory rows are
// DH bf16 = DH/8 chunks of 16 bytes; chunk c of row r is stored at chunk c ^ (r & 7) so that the 8 row
// addresses of an ldmatrix hit 8 different bank groups.
template <int DH>
__device__ __forceinline__ int swz(int row, int c) {
    return row * DH + ((c ^ (row & 7)) << 3);
}

template <int DH, int NW>
__global__ void __launch_bounds__(NW * 32)
    attention_tiled(const bf16* __restrict__ q,        // q: [T, H, DH] bf16, queries at positions p0 … p0+T−1
                    const bf16* __restrict__ k_cache,  // k_cache: [B, R, Hkv, DH] bf16
                    const bf16* __restrict__ v_cache,  // v_cache: [B, R, Hkv, DH] bf16
                    bf16* __restrict__ out,            // out: [T, H, DH] bf16
                    int T, int H, int Hkv, int R, int W, int p0, int b) {
    constexpr int BM = 16 * NW, BN = DH == 64 ? 64 : 32, CH = DH / 8, NT = NW * 32;
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
    const int g = lane >> 2, tq = lane & 3;                // mma fragment coordinates
    const int qp0 = p0 + m0 + warp * 16 + g, qp1 = qp0 + 8;  // positions of this thread's two rows
    float o[DH / 8][4];
#pragma unroll
    for (int i = 0; i < DH / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m_r[2] = {NEG_INF, NEG_INF}, l_r[2] = {0.f, 0.f};
    unsigned qa[DH / 16][4];

    for (int n = 0; n < n_tiles; ++n) {
        if (n + 1 < n_tiles) {
            load_kv(n + 1, (n + 1) & 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (n == 0) {
#pragma unroll
            for (int kk = 0; kk < DH / 16; ++kk)
                ldmatrix_x4(qa[kk], smem_addr(sQ + swz<DH>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
        }
        const bf16* k = sK[n & 1];
        const bf16* v = sV[n & 1];
        float s[BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < DH / 16; kk += 2) {
                unsigned kb[4];
                ldmatrix_x4(kb, smem_addr(k + swz<DH>(nt * 8 + (lane & 7), kk * 2 + (lane >> 3))));
                mma_bf16_16816(s[nt], qa[kk], kb[0], kb[1]);
                mma_bf16_16816(s[nt], qa[kk + 1], kb[2], kb[3]);
            }
        }
        // Mask only the tiles that cross the window's lower edge or the causal diagonal for some row.
        const int ka = kstart + n * BN;
        if (ka + BN - 1 > pfirst || ka <= p0 + m0 + BM - 1 - W) {
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int kj = ka + nt * 8 + 2 * tq + (e & 1), qp = e < 2 ? qp0 : qp1;
                    if (kj > qp || kj <= qp - W) s[nt][e] = NEG_INF;
                }
            }
        }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = NEG_INF;
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mn = fmaxf(m_r[r], mx * sl);
            const float mu = mn == NEG_INF ? 0.f : mn;  // a row with no visible key yet
            alpha[r] = exp2f(m_r[r] - mu);
            m_r[r] = mn;
            float rs = 0.f;
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) {
                s[nt][2 * r] = exp2f(fmaf(s[nt][2 * r], sl, -mu));
                s[nt][2 * r + 1] = exp2f(fmaf(s[nt][2 * r + 1], sl, -mu));
                rs += s[nt][2 * r] + s[nt][2 * r + 1];
            }
            l_r[r] = l_r[r] * alpha[r] + rs;
        }
#pragma unroll
        for (int i = 0; i < DH / 8; ++i) {
            o[i][0] *= alpha[0], o[i][1] *= alpha[0], o[i][2] *= alpha[1], o[i][3] *= alpha[1];
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            const unsigned pa[4] = {cvt_bf16x2(s[2 * kk][0], s[2 * kk][1]), cvt_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                    cvt_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    cvt_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dt = 0; dt < DH / 8; dt += 2) {
                unsigned vb[4];
                ldmatrix_x4_trans(vb, smem_addr(v + swz<DH>(kk * 16 + (lane & 15), dt + (lane >> 4))));
                mma_bf16_16816(o[dt], pa, vb[0], vb[1]);
                mma_bf16_16816(o[dt + 1], pa, vb[2], vb[3]);
            }
        }
        __syncthreads();  // this stage is refilled by the next iteration's prefetch
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 1);
        l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 2);
    }
    const float inv0 = 1.f / l_r[0], inv1 = 1.f / l_r[1];
    const int r0 = m0 + warp * 16 + g, r1 = r0 + 8;
#pragma unroll
    for (int dt = 0; dt < DH / 8; ++dt) {
        const int d = dt * 8 + 2 * tq;
        if (r0 < T)
            *reinterpret_cast<unsigned*>(out + ((size_t)r0 * H + h) * DH + d) = cvt_bf16x2(o[dt][0] * inv0, o[dt][1] * inv0);
        if (r1 < T)
            *reinterpret_cast<unsigned*>(out + ((size_t)r1 * H + h) * DH + d) = cvt_bf16x2(o[dt][2] * inv1, o[dt][3] * inv1);
    }
}

#ifdef VOXTRAL_NVCC_CHECK
template __global__ void attention_split<128, 4, 64>(const bf16*, const bf16*, const bf16*, const int*, const int*,
                                                     float*, int, int, int);
template __global__ void attention_split<64, 8, 32>(const bf16*, const bf16*, const bf16*, const int*, const int*,
                                                    float*, int, int, int);
template __global__ void attention_combine<128>(const float*, const int*, bf16*, int, int, int);
template __global__ void attention_combine<64>(const float*, const int*, bf16*, int, int, int);
template __global__ void attention_tiled<64, 4>(const bf16*, const bf16*, const bf16*, bf16*, int, int, int, int,
                                                int, int, int);
template __global__ void attention_tiled<64, 8>(const bf16*, const bf16*, const bf16*, bf16*, int, int, int, int,
                                                int, int, int);
template __global__ void attention_tiled<128, 4>(const bf16*, const bf16*, const bf16*, bf16*, int, int, int, int,
                                                 int, int, int);
#endif
