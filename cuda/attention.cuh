// Device code shared by attention_split (cuda/attention.cu) and the persistent decoder step (cuda/layers.cu):
// one warp's loads of 16 keys of a ring KV cache and its online-softmax step over them (see attention.cu).
#ifndef VOXTRAL_ATTENTION_CUH
#define VOXTRAL_ATTENTION_CUH
#include "common.cuh"

#define NEG_INF (-__int_as_float(0x7f800000))

constexpr int SPLIT_THREADS = 128;

// ld.global.cg: read through L2 only, for partials that other blocks of this launch wrote.
__device__ __forceinline__ float4 ld_cg4(const float* p) {
    float4 v;
    asm volatile("ld.global.cg.v4.f32 {%0,%1,%2,%3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ float2 ld_cg2(const float* p) {
    float2 v;
    asm volatile("ld.global.cg.v2.f32 {%0,%1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "l"(p));
    return v;
}
// Transpose of an 8×8 b16 matrix held one 32-bit pair per lane (row lane/4, columns 2·(lane%4) + 0, 1).
__device__ __forceinline__ unsigned movmatrix_trans(unsigned a) {
    unsigned d;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(a));
    return d;
}
__device__ __forceinline__ unsigned word(const uint4& v, int j) {
    return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

// One warp of a flash-decoding split: G ≤ 8 query heads of one kv head, 8·NH keys a step (attention_split):
// NH = 2 (16 keys, 64 registers of K and V fragments a set), or NH = 1 (8 keys: half the registers; the
// P·V products then have zeros for keys 8 … 15).
template <int DH, int G, int NH = 2>
struct SplitWarp {
    static_assert(NH == 1 || NH == 2, "8 or 16 keys a step");
    static constexpr int NU = DH / 32, STEP = 8 * NH;
    // Rows of keys kb + gi (and kb + 8 + gi) below kmax (zero past it), chunks 4u + tq.
    template <bool CG>
    static __device__ __forceinline__ void load(uint4 (&kf)[NH][NU], uint4 (&vf)[NH][NU], const bf16* k_cache,
                                                const bf16* v_cache, int kb, int kmax, int row0, int R, int Hkv,
                                                int hk) {
        const int lane = threadIdx.x & 31, gi = lane >> 2, tq = lane & 3;
#pragma unroll
        for (int h = 0; h < NH; ++h) {
            const int key = kb + 8 * h + gi;
            int r = row0 + key;  // key < n ≤ W ≤ R: one wrap at most
            r -= r >= R ? R : 0;
            const size_t off = ((size_t)r * Hkv + hk) * DH + tq * 8;
#pragma unroll
            for (int u = 0; u < NU; ++u) {
                kf[h][u] = vf[h][u] = make_uint4(0, 0, 0, 0);
                if (key < kmax) {
                    kf[h][u] = CG ? __ldcg(reinterpret_cast<const uint4*>(k_cache + off + 32 * u))
                                  : ld_nc16(k_cache + off + 32 * u);
                    vf[h][u] = CG ? __ldcg(reinterpret_cast<const uint4*>(v_cache + off + 32 * u))
                                  : ld_nc16(v_cache + off + 32 * u);
                }
            }
        }
    }
    static __device__ __forceinline__ void step(float& m, float& l, float (&o)[NU][2][4], const uint4 (&qa)[NU],
                                                const uint4 (&kf)[NH][NU], const uint4 (&vf)[NH][NU], int kb,
                                                int k1, float scale) {
        const int tq = threadIdx.x & 3;
        float c[NH][4], mt = m;
#pragma unroll
        for (int h = 0; h < NH; ++h) {
            c[h][0] = c[h][1] = c[h][2] = c[h][3] = 0.f;
#pragma unroll
            for (int u = 0; u < NU; ++u) {
                const unsigned a0[4] = {qa[u].x, 0u, qa[u].y, 0u}, a1[4] = {qa[u].z, 0u, qa[u].w, 0u};
                mma_bf16_16816(c[h], a0, kf[h][u].x, kf[h][u].y);
                mma_bf16_16816(c[h], a1, kf[h][u].z, kf[h][u].w);
            }
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                c[h][x] = kb + 8 * h + 2 * tq + x < k1 ? c[h][x] * scale : NEG_INF;
                mt = fmaxf(mt, c[h][x]);
            }
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
        const float mu = mt == NEG_INF ? 0.f : mt;  // no visible key yet for this head
        const float alpha = fast_exp2(m - mu);
        m = mt;
        float ps = 0.f;
#pragma unroll
        for (int h = 0; h < NH; ++h)
#pragma unroll
            for (int x = 0; x < 2; ++x) c[h][x] = fast_exp2(c[h][x] - mu), ps += c[h][x];
        l = fmaf(l, alpha, ps);  // this lane's keys; the quad is summed at the end
        const float a_lo = __shfl_sync(0xffffffffu, alpha, 8 * tq), a_hi = __shfl_sync(0xffffffffu, alpha, 8 * tq + 4);
        const unsigned b0 = cvt_bf16x2(c[0][0], c[0][1]), b1 = NH == 2 ? cvt_bf16x2(c[NH - 1][0], c[NH - 1][1]) : 0u;
#pragma unroll
        for (int u = 0; u < NU; ++u)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                float* acc = o[u][hh];
                acc[0] *= a_lo, acc[1] *= a_hi, acc[2] *= a_lo, acc[3] *= a_hi;
                const unsigned a[4] = {
                    movmatrix_trans(word(vf[0][u], 2 * hh)), movmatrix_trans(word(vf[0][u], 2 * hh + 1)),
                    NH == 2 ? movmatrix_trans(word(vf[NH - 1][u], 2 * hh)) : 0u,
                    NH == 2 ? movmatrix_trans(word(vf[NH - 1][u], 2 * hh + 1)) : 0u};
                mma_bf16_16816(o[u][hh], a, b0, b1);
            }
    }
    // The warp's keys kb, kb + STRIDE, … below k1 (its first STEP already in ka, va): two register sets
    // (DB), so the next keys load while these are used, or one (the next keys load after these are used:
    // other warps hide the wait); (m, l) end as the warp's max and its quad-summed sum.
    template <bool CG, int STRIDE, bool DB = true>
    static __device__ __forceinline__ void sweep(float& m, float& l, float (&o)[NU][2][4], const uint4 (&qa)[NU],
                                                 uint4 (&ka)[NH][NU], uint4 (&va)[NH][NU], const bf16* k_cache,
                                                 const bf16* v_cache, int kb, int k1, int row0, int R, int Hkv,
                                                 int hk, float scale) {
        if constexpr (!DB) {
            while (kb < k1) {
                step(m, l, o, qa, ka, va, kb, k1, scale);
                kb += STRIDE;
                if (kb < k1) load<CG>(ka, va, k_cache, v_cache, kb, k1, row0, R, Hkv, hk);
            }
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            return;
        }
        uint4 kc[NH][NU], vc[NH][NU];
        while (kb < k1) {
            const int kn = kb + STRIDE;
            if (kn < k1) load<CG>(kc, vc, k_cache, v_cache, kn, k1, row0, R, Hkv, hk);
            step(m, l, o, qa, ka, va, kb, k1, scale);
            if (kn >= k1) break;
            kb = kn + STRIDE;
            if (kb < k1) load<CG>(ka, va, k_cache, v_cache, kb, k1, row0, R, Hkv, hk);
            step(m, l, o, qa, kc, vc, kn, k1, scale);
        }
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
    }
    // The warp's (max, sum, acc) per head → sm [G], sl [G], sacc [G][DH] of its shared-memory slot.
    static __device__ __forceinline__ void to_shared(float m, float l, const float (&o)[NU][2][4], float* sm,
                                                     float* sl, float* sacc) {
        const int lane = threadIdx.x & 31, gi = lane >> 2, tq = lane & 3;
        if (tq == 0 && gi < G) sm[gi] = m, sl[gi] = l;
#pragma unroll
        for (int u = 0; u < NU; ++u)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int d = 32 * u + 8 * (gi >> 1) + 4 * hh + (gi & 1);  // dims d (c0, c1) and d + 2 (c2, c3)
                if (2 * tq < G) sacc[(2 * tq) * DH + d] = o[u][hh][0], sacc[(2 * tq) * DH + d + 2] = o[u][hh][2];
                if (2 * tq + 1 < G)
                    sacc[(2 * tq + 1) * DH + d] = o[u][hh][1], sacc[(2 * tq + 1) * DH + d + 2] = o[u][hh][3];
            }
    }
    // The block's NWARP warp slots (sm [NWARP][G], sl, sacc [NWARP][G][DH]) merged: the output of heads
    // o_t [G][DH] bf16 when the split is the only one (n_act = 1), else the split's partial (acc [G][DH] at
    // row + split·G·DH, (max, sum) at pml + 2·(split·G + g)). Threads 0 … NTHREADS−1 of the block.
    template <int NWARP, int NTHREADS>
    static __device__ __forceinline__ void combine(const float* sm, const float* sl, const float* sacc, int n_act,
                                                   int split, float* row, float* pml, bf16* o_t) {
        constexpr int D4 = DH / 4;
        for (int idx = threadIdx.x; idx < G * D4; idx += NTHREADS) {
            const int g = idx / D4, d4 = idx % D4;
            float mb = sm[g];
#pragma unroll
            for (int w = 1; w < NWARP; ++w) mb = fmaxf(mb, sm[w * G + g]);  // finite: the split has a key
            float lb = 0.f;
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int w = 0; w < NWARP; ++w) {
                const float c = fast_exp2(sm[w * G + g] - mb);
                const float4 x = reinterpret_cast<const float4*>(sacc + (w * G + g) * DH)[d4];
                lb = fmaf(c, sl[w * G + g], lb);
                a = make_float4(fmaf(c, x.x, a.x), fmaf(c, x.y, a.y), fmaf(c, x.z, a.z), fmaf(c, x.w, a.w));
            }
            if (n_act == 1) {  // the whole window in one split: no partials
                const float inv = 1.f / lb;
                *reinterpret_cast<uint2*>(o_t + g * DH + 4 * d4) =
                    make_uint2(pack_bf16x2(a.x * inv, a.y * inv), pack_bf16x2(a.z * inv, a.w * inv));
            } else {
                reinterpret_cast<float4*>(row + ((size_t)split * G + g) * DH)[d4] = a;
                if (d4 == 0) reinterpret_cast<float2*>(pml)[split * G + g] = make_float2(mb, lb);
            }
        }
    }
    // The last split of a (query, kv head) to arrive merges all n_act partials into o_t [G][DH] bf16.
    template <int NTHREADS>
    static __device__ __forceinline__ void merge(const float* row, const float* pml, int n_act, bf16* o_t) {
        constexpr int D4 = DH / 4;
        for (int idx = threadIdx.x; idx < G * D4; idx += NTHREADS) {
            const int g = idx / D4, d4 = idx % D4;
            float mr = NEG_INF, lr = 0.f;
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
            for (int s = 0; s < n_act; ++s) {
                const float2 ml = ld_cg2(pml + 2 * (s * G + g));
                const float4 x = ld_cg4(row + ((size_t)s * G + g) * DH + 4 * d4);
                const float mn = fmaxf(mr, ml.x), ca = fast_exp2(mr - mn), cb = fast_exp2(ml.x - mn);
                mr = mn;
                lr = lr * ca + ml.y * cb;
                a = make_float4(fmaf(a.x, ca, x.x * cb), fmaf(a.y, ca, x.y * cb), fmaf(a.z, ca, x.z * cb),
                                fmaf(a.w, ca, x.w * cb));
            }
            const float inv = 1.f / lr;
            *reinterpret_cast<uint2*>(o_t + g * DH + 4 * d4) =
                make_uint2(pack_bf16x2(a.x * inv, a.y * inv), pack_bf16x2(a.z * inv, a.w * inv));
        }
    }
};

#endif  // VOXTRAL_ATTENTION_CUH
