// Bias + interleaved RoPE on a fused q|k|v projection, q out in bf16, k and v into the ring caches
// (SPEC §3.4, §5). Grid (row groups, pair chunks): block (g, y) takes pairs y·blockDim … of the rows
// g·rows … g·rows + rows − 1, one pair per thread and row, so a pass of a few positions still spreads
// over many blocks (one block per position ran its row's 3 072 pairs in 12 dependent rounds: 8 µs for 4
// positions) and a long one forms each frequency once per block, not per row. Pair i of a head turns
// by pos·θ^(−2i/Dh); the angle is formed and reduced mod 2π in double so that positions up to 10^6
// match a float64 reference (the same expression as gemv.cu's rope epilogue: bitwise equal results).
// Each slot owns its cache: cache[c] holds the addresses of slot c's K and V of this layer, bf16
// [R_c, Hkv, Dh], ring[c] its length R_c; position p goes to row p % R_c. c = slot[t], or t itself when
// slot is null (tables laid out per row, as the decoder step's are: no dependent load). A PDL launch
// forms its frequencies θ^(−2i/Dh) before it waits for qkv and pos. rope_qkv reads an f32 qkv (the
// decoder's), rope_qkv_bf16 a bf16 one (the encoder's GEMM output: half the bytes read); both add the
// f32 bias and turn in f32.
#include "common.cuh"

#define ROPE_MAX_ROWS 8  // rows per block at most (the launcher's `rows`)

// Pair j of row r of qkv as two floats.
__device__ __forceinline__ float2 load_pair(const float* qkv, size_t row_pairs, int r, int j) {
    return reinterpret_cast<const float2*>(qkv + (size_t)r * row_pairs * 2)[j];
}
__device__ __forceinline__ float2 load_pair(const bf16* qkv, size_t row_pairs, int r, int j) {
    const unsigned w = reinterpret_cast<const unsigned*>(qkv + (size_t)r * row_pairs * 2)[j];
    return make_float2(bf16_lo(w), bf16_hi(w));
}

template <typename In>
__device__ __forceinline__ void rope_body(const In* __restrict__ qkv, const float* __restrict__ bias,
                                          const int* __restrict__ pos, const int* __restrict__ slot,
                                          bf16* __restrict__ q_out, const unsigned long long* __restrict__ cache,
                                          const int* __restrict__ ring, int T, int rows, int H, int Hkv, int Dh,
                                          float theta) {
    extern __shared__ float2 cs[];  // [rows, Dh/2] (cos, sin) of each row's position
    __shared__ unsigned* dst[ROPE_MAX_ROWS][2];  // each row's K and V cache row
    const int half = Dh / 2, n_pairs = (H + 2 * Hkv) * half, n_rot = (H + Hkv) * half;
    const int t0 = blockIdx.x * rows, n = min(rows, T - t0);
    const int first = blockIdx.y * blockDim.x, j = first + threadIdx.x;  // this thread's pair of each row
    const bool rotates = first < n_rot;  // the block holds q or k pairs (v pairs only: no table)
    const int i = threadIdx.x;  // the frequency this thread forms (i < half; blockDim ≥ half)
    const double freq = rotates && i < half ? exp(-2.0 * i / Dh * log((double)theta)) : 0.0;
    pdl_wait();
    pdl_launch_dependents();
    float2 v[ROPE_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < ROPE_MAX_ROWS; ++r)  // every row's pair in flight while the tables are formed
        if (r < n && j < n_pairs) v[r] = load_pair(qkv, n_pairs, t0 + r, j);
    if (rotates && i < half) {  // the first warp(s): each row's (cos, sin) of pair i
        int p[ROPE_MAX_ROWS];
#pragma unroll
        for (int r = 0; r < ROPE_MAX_ROWS; ++r) p[r] = r < n ? pos[t0 + r] : 0;  // loads issued together
#pragma unroll
        for (int r = 0; r < ROPE_MAX_ROWS; ++r) {
            if (r >= n) break;
            const double two_pi = 6.283185307179586476925286766559, inv_two_pi = 0.15915494309189533576888376337251;
            const double ang = (double)p[r] * freq;
            float s, co;
            sincosf((float)(ang - floor(ang * inv_two_pi) * two_pi), &s, &co);
            cs[r * half + i] = make_float2(co, s);
        }
    }
    const int r = (int)blockDim.x - 1 - threadIdx.x;  // the last warp: row r's cache rows
    if (r < n && first + (int)blockDim.x > H * half) {
        const int t = t0 + r, c = slot ? slot[t] : t;
        const size_t row_off = (size_t)(pos[t] % ring[c]) * Hkv * Dh;
        dst[r][0] = reinterpret_cast<unsigned*>(reinterpret_cast<bf16*>(cache[2 * c]) + row_off);
        dst[r][1] = reinterpret_cast<unsigned*>(reinterpret_cast<bf16*>(cache[2 * c + 1]) + row_off);
    }
    __syncthreads();
    if (j >= n_pairs) return;
    const float2 b = bias ? reinterpret_cast<const float2*>(bias)[j] : make_float2(0.f, 0.f);
#pragma unroll
    for (int r = 0; r < ROPE_MAX_ROWS; ++r) {
        if (r >= n) break;
        float2 x = v[r];
        x.x += b.x, x.y += b.y;
        if (j < n_rot) {
            const float2 a = cs[r * half + j % half];
            x = make_float2(x.x * a.x - x.y * a.y, x.x * a.y + x.y * a.x);
        }
        const unsigned packed = pack_bf16x2(x.x, x.y);
        if (j < H * half) reinterpret_cast<unsigned*>(q_out + (size_t)(t0 + r) * H * Dh)[j] = packed;
        else if (j < n_rot) dst[r][0][j - H * half] = packed;
        else dst[r][1][j - n_rot] = packed;
    }
}

#define ROPE_PARAMS(In)                                                                                             \
    const In *__restrict__ qkv,                      /* qkv: [T, (H+2·Hkv)·Dh], q | k | v */                     \
        const float *__restrict__ bias,              /* bias: [(H+2·Hkv)·Dh] f32 or nullptr */                  \
        const int *__restrict__ pos,                 /* pos: [T] int32 absolute positions */                    \
        const int *__restrict__ slot,                /* slot: [T] int32 slot c of each position, or null: c = t */ \
        bf16 *__restrict__ q_out,                    /* q_out: [T, H, Dh] bf16 */                               \
        const unsigned long long *__restrict__ cache, /* cache: [C, 2] K, V addresses */                        \
        const int *__restrict__ ring,                /* ring: [C] int32 R_c */                                  \
        int T, int rows, int H, int Hkv, int Dh, float theta

extern "C" __global__ void rope_qkv(ROPE_PARAMS(float)) {
    rope_body(qkv, bias, pos, slot, q_out, cache, ring, T, rows, H, Hkv, Dh, theta);
}

extern "C" __global__ void rope_qkv_bf16(ROPE_PARAMS(bf16)) {
    rope_body(qkv, bias, pos, slot, q_out, cache, ring, T, rows, H, Hkv, Dh, theta);
}
