// Device code shared by the decoder-step GEMVs (cuda/gemv.cu) and the persistent decoder step
// (cuda/layers.cu): staging x (with the RMSNorm prologue), tile rows and the epilogues. See gemv.cu.
#ifndef VOXTRAL_GEMV_CUH
#define VOXTRAL_GEMV_CUH
#include "common.cuh"


enum : int { GEMV_STORE = 0, GEMV_ADD = 1, GEMV_SWIGLU = 2, GEMV_SWIGLU_BF16 = 3, GEMV_ROPE = 4 };
// The SwiGLU epilogues pair gate row f with up row F + f (tiles of 4 features); the others take rows as they are.
__host__ __device__ constexpr bool gemv_swiglu(int epi) { return epi == GEMV_SWIGLU || epi == GEMV_SWIGLU_BF16; }

// The ROPE epilogue (gemv_bulk only): y is a fused q | k | v row of the decoder step; like rope_qkv
// (cuda/rope.cu, SPEC §3.4, §5) it turns each q and k pair (2i, 2i+1) of a head by pos·θ^(−2i/Dh), writes
// q as bf16 [B, H, Dh] and k, v as bf16 into row pos % ring[c] of slot c's caches (c = slot[b], or b when
// slot is null), so the step needs no rope_qkv launch and no f32 qkv round trip.
struct GemvRope {
    const int* pos;                     // pos: [B] int32 positions
    const int* slot;                    // slot: [B] int32 or null
    bf16* q;                            // q: [B, H, Dh] bf16
    const unsigned long long* cache;    // cache: [C, 2] K, V ring addresses
    const int* ring;                    // ring: [C] int32 ring rows
    int H, Hkv, Dh;
    float theta;
};
constexpr int GEMV_MAX_B = 8;   // rows of x: the mma's m16 side holds their 8 hi and 8 lo halves
constexpr int GEMV_TILE = 8;    // weight rows per tile (the mma's n8)
constexpr int GEMV_STEP_K = 32; // k per warp step: 4 lanes × 8 bf16

// Row stride (elements) of the staged x: K rounded up to 64, + 32 so that consecutive rows start 64 bytes
// apart modulo 128 and the 8 lanes of a 16-byte shared-memory phase (2 rows × 4 lanes) hit distinct banks.
__host__ __device__ __forceinline__ int gemv_x_stride(int K) { return (K + 63) / 64 * 64 + 32; }

template <int PREFETCH>
__device__ __forceinline__ uint4 ld_stream16(const bf16* p) {
    uint4 r;
    if constexpr (PREFETCH == 256)
        asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    else if constexpr (PREFETCH == 128)
        asm volatile("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    else
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ float gemv_silu(float v) { return v / (1.0f + __expf(-v)); }

// 8 f32 values of x as the bf16 hi and lo halves of an mma A fragment (hi + lo keeps ~16 bits of the
// mantissa); NORM: their squares added to sq first, then each multiplied by its RMSNorm weight in gv.
template <bool NORM>
__device__ __forceinline__ void gemv_split8(float (&v)[8], const float (&gv)[8], float& sq, uint4& hi, uint4& lo) {
    if constexpr (NORM) {
#pragma unroll
        for (int i = 0; i < 8; ++i) sq = fmaf(v[i], v[i], sq), v[i] *= gv[i];
    }
    unsigned h[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        h[i] = cvt_bf16x2(v[2 * i], v[2 * i + 1]);
        l[i] = cvt_bf16x2(v[2 * i] - bf16_lo(h[i]), v[2 * i + 1] - bf16_hi(h[i]));
    }
    hi = make_uint4(h[0], h[1], h[2], h[3]);
    lo = make_uint4(l[0], l[1], l[2], l[3]);
}

// Stage x (NORM: g ⊙ x) as bf16 hi | lo rows [B, S] in shared memory, zero past K; NORM: per-warp
// sums of squares of x into red[b·WARPS + warp]. X_BF16: x is already bf16 (exact), no lo rows.
template <bool NORM, bool X_BF16, int WARPS>
__device__ __forceinline__ void gemv_stage_x(const void* __restrict__ x, const float* __restrict__ g, bf16* xh,
                                             bf16* xl, float* red, int B, int K, int S) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, chunks = S / 8;
    const bool vec = K % 8 == 0 && (size_t)x % 16 == 0 && (!NORM || (size_t)g % 16 == 0);
    for (int b = 0; b < B; ++b) {
        float sq = 0.0f;
        for (int c = tid; c < chunks; c += WARPS * 32) {
            const int k = 8 * c;
            uint4 hi, lo = make_uint4(0, 0, 0, 0);
            if constexpr (X_BF16) {
                const bf16* xr = static_cast<const bf16*>(x) + (size_t)b * K;
                if (vec && k + 8 <= K) {
                    hi = __ldcg(reinterpret_cast<const uint4*>(xr + k));
                } else {
                    unsigned e[8];
#pragma unroll
                    for (int i = 0; i < 8; ++i) e[i] = k + i < K ? __ldcg(xr + k + i) : 0u;
                    hi = make_uint4(e[0] | e[1] << 16, e[2] | e[3] << 16, e[4] | e[5] << 16, e[6] | e[7] << 16);
                }
            } else {
                const float* xr = static_cast<const float*>(x) + (size_t)b * K;
                float v[8];
                if (vec && k + 8 <= K) {
                    const float4 a = __ldcg(reinterpret_cast<const float4*>(xr + k));
                    const float4 c4 = __ldcg(reinterpret_cast<const float4*>(xr + k + 4));
                    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = c4.x, v[5] = c4.y, v[6] = c4.z, v[7] = c4.w;
                } else {
#pragma unroll
                    for (int i = 0; i < 8; ++i) v[i] = k + i < K ? __ldcg(xr + k + i) : 0.0f;
                }
                float gv[8] = {};
                if constexpr (NORM) {
                    if (vec && k + 8 <= K) {
                        const float4 a = *reinterpret_cast<const float4*>(g + k);
                        const float4 c4 = *reinterpret_cast<const float4*>(g + k + 4);
                        gv[0] = a.x, gv[1] = a.y, gv[2] = a.z, gv[3] = a.w;
                        gv[4] = c4.x, gv[5] = c4.y, gv[6] = c4.z, gv[7] = c4.w;
                    } else {
#pragma unroll
                        for (int i = 0; i < 8; ++i) gv[i] = k + i < K ? g[k + i] : 0.0f;
                    }
                }
                gemv_split8<NORM>(v, gv, sq, hi, lo);
            }
            *reinterpret_cast<uint4*>(xh + (size_t)b * S + k) = hi;
            if constexpr (!X_BF16) *reinterpret_cast<uint4*>(xl + (size_t)b * S + k) = lo;
        }
        if constexpr (NORM) {
            sq = warp_sum(sq);
            if (lane == 0) red[b * WARPS + warp] = sq;
        }
    }
}

// Weight row that lane group g of a tile streams: STORE/ADD rows 8·tile + g; SWIGLU gate row f (g even)
// or up row F + f (g odd) of feature f = 4·tile + g/2. Returns −1 past the end.
template <int EPI>
__device__ __forceinline__ int gemv_tile_row(int tile, int g, int N) {
    if constexpr (gemv_swiglu(EPI)) {
        const int F = N / 2, f = tile * (GEMV_TILE / 2) + (g >> 1);
        return f < F ? f + (g & 1) * F : -1;
    } else {
        const int n = tile * GEMV_TILE + g;
        return n < N ? n : -1;
    }
}

template <int EPI, bool X_BF16, int WARPS, int UNROLL, int PREFETCH, bool VEC>
struct GemvChunk {
    // Load chunk c (steps c·UNROLL … +UNROLL−1 of this warp) of tile `tile`; zeros where there is nothing.
    static __device__ __forceinline__ void load(uint4 (&buf)[UNROLL], const bf16* __restrict__ w, int tile, int c,
                                                int my_steps, int N, int K) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
        const int row = gemv_tile_row<EPI>(tile, g, N);
        const bf16* wr = w + (size_t)(row < 0 ? 0 : row) * K;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int j = c * UNROLL + u, k = (warp + j * WARPS) * GEMV_STEP_K + 8 * t;
            buf[u] = make_uint4(0, 0, 0, 0);
            if constexpr (VEC) {
                if (row >= 0 && j < my_steps && k < K) buf[u] = ld_stream16<PREFETCH>(wr + k);
            } else {
                if (row >= 0 && j < my_steps) {
                    unsigned e[8];
#pragma unroll
                    for (int i = 0; i < 8; ++i) e[i] = k + i < K ? wr[k + i] : 0u;
                    buf[u] = make_uint4(e[0] | e[1] << 16, e[2] | e[3] << 16, e[4] | e[5] << 16, e[6] | e[7] << 16);
                }
            }
        }
    }
    // acc += x · (chunk c)ᵀ: two mmas per step, on alternating accumulators to halve the dependency chain.
    static __device__ __forceinline__ void mma(float (&acc)[2][4], const uint4 (&buf)[UNROLL], const bf16* xh,
                                               const bf16* xl, int c, int my_steps, int B, int S) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
        const bool row_ok = g < B;
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int j = c * UNROLL + u;
            if (j < my_steps) {
                const int k = (warp + j * WARPS) * GEMV_STEP_K + 8 * t;
                uint4 h = make_uint4(0, 0, 0, 0), l = make_uint4(0, 0, 0, 0);
                if (row_ok) {
                    h = *reinterpret_cast<const uint4*>(xh + (size_t)g * S + k);
                    if constexpr (!X_BF16) l = *reinterpret_cast<const uint4*>(xl + (size_t)g * S + k);
                }
                const unsigned a0[4] = {h.x, l.x, h.y, l.y}, a1[4] = {h.z, l.z, h.w, l.w};
                mma_bf16_16816(acc[0], a0, buf[u].x, buf[u].y);
                mma_bf16_16816(acc[1], a1, buf[u].z, buf[u].w);
            }
        }
    }
};

// Sum the WARPS partials of lane (gb, t) for one tile and write its outputs (batch row gb < B).
template <int EPI, int WARPS>
__device__ __forceinline__ void gemv_epilogue(const volatile float* p, int tile, float scale, void* __restrict__ out,
                                              int B, int N, const GemvRope& rope = GemvRope{}) {
    const int lane = threadIdx.x & 31, gb = lane >> 2, t = lane & 3;
    if (gb >= B) return;
    float v0 = 0.0f, v1 = 0.0f;
#pragma unroll
    for (int i = 0; i < WARPS; ++i) v0 += p[(i * 32 + lane) * 2], v1 += p[(i * 32 + lane) * 2 + 1];
    v0 *= scale, v1 *= scale;  // lane (gb, t): batch row gb, tile columns 2t, 2t+1
    if constexpr (gemv_swiglu(EPI)) {
        const int F = N / 2, f = tile * (GEMV_TILE / 2) + t;
        if (f < F) {
            const float y = gemv_silu(v0) * v1;
            if constexpr (EPI == GEMV_SWIGLU_BF16)
                static_cast<bf16*>(out)[(size_t)gb * F + f] = f32_to_bf16(y);
            else
                static_cast<float*>(out)[(size_t)gb * F + f] = y;
        }
    } else if constexpr (EPI == GEMV_ROPE) {
        const int n = tile * GEMV_TILE + 2 * t;  // even: the pair (n, n + 1)
        if (n < N) {
            const int Dh = rope.Dh, qd = rope.H * Dh, kd = rope.Hkv * Dh, p = rope.pos[gb];
            if (n < qd + kd) {  // the same arithmetic as rope_qkv
                const double two_pi = 6.283185307179586476925286766559, inv_two_pi = 0.15915494309189533576888376337251;
                const int i = (n % Dh) / 2;
                const double ang = (double)p * exp(-2.0 * i / Dh * log((double)rope.theta));
                float sn, cs;
                sincosf((float)(ang - floor(ang * inv_two_pi) * two_pi), &sn, &cs);
                const float x = v0, y = v1;
                v0 = x * cs - y * sn, v1 = x * sn + y * cs;
            }
            const unsigned packed = pack_bf16x2(v0, v1);
            if (n < qd) {
                *reinterpret_cast<unsigned*>(rope.q + (size_t)gb * qd + n) = packed;
            } else {
                const int c = rope.slot ? rope.slot[gb] : gb, is_v = n >= qd + kd;
                bf16* ring_base = reinterpret_cast<bf16*>(rope.cache[2 * c + is_v]);
                const size_t row = (size_t)(p % rope.ring[c]) * kd;
                *reinterpret_cast<unsigned*>(ring_base + row + (n - qd - is_v * kd)) = packed;
            }
        }
    } else {
        const int n = tile * GEMV_TILE + 2 * t;
        float* o = static_cast<float*>(out) + (size_t)gb * N + n;
        if (n < N) o[0] = EPI == GEMV_ADD ? __ldcg(o) + v0 : v0;
        if (n + 1 < N) o[1] = EPI == GEMV_ADD ? __ldcg(o + 1) + v1 : v1;
    }
}

// Barrier of the consumer warps 0 … warps−1 only (a producer warp of the block runs on its own).
__device__ __forceinline__ void consumers_sync(int warps) {
    asm volatile("bar.sync 1, %0;\n" ::"r"(warps * 32) : "memory");
}

#endif  // VOXTRAL_GEMV_CUH
