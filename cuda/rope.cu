// Bias + interleaved RoPE on a fused q|k|v projection, q out in bf16, k and v into the ring caches
// (SPEC §3.4, §5). One block per position t. Pair i of a head turns by pos·θ^(−2i/Dh); the angle is
// formed and reduced mod 2π in double so that positions up to 10^6 match a float64 reference.
// Each slot owns its cache: cache[c] holds the addresses of slot c's K and V of this layer, bf16
// [R_c, Hkv, Dh], ring[c] its length R_c; position p goes to row p % R_c. c = slot[t], or t itself when
// slot is null (tables laid out per row, as the decoder step's are: no dependent load). The host writes
// slot, cache and ring between launches (never a kernel), so a PDL launch reads them, and computes its
// first frequency θ^(−2i/Dh), before it waits for qkv and pos.
#include "common.cuh"

extern "C" __global__ void rope_qkv(const float* __restrict__ qkv,   // qkv: [T, (H+2·Hkv)·Dh] f32, q | k | v
                                    const float* __restrict__ bias,  // bias: [(H+2·Hkv)·Dh] f32 or nullptr
                                    const int* __restrict__ pos,     // pos: [T] int32 absolute positions
                                    const int* __restrict__ slot,    // slot: [T] int32 slot c of each position, or null: c = t
                                    bf16* __restrict__ q_out,        // q_out: [T, H, Dh] bf16
                                    const unsigned long long* __restrict__ cache,  // cache: [C, 2] K, V addresses
                                    const int* __restrict__ ring,    // ring: [C] int32 R_c
                                    int H, int Hkv, int Dh, float theta) {
    extern __shared__ float2 cs[];  // [Dh/2] (cos, sin) of this position
    const int t = blockIdx.x, half = Dh / 2, n_pairs = (H + 2 * Hkv) * half;
    const int i0 = threadIdx.x;
    const double freq0 = exp(-2.0 * i0 / Dh * log((double)theta));  // θ^(−2i/Dh) of pair i0: needs no input
    const int c = slot ? slot[t] : t, R = ring[c];
    bf16* k_cache = reinterpret_cast<bf16*>(cache[2 * c]);
    bf16* v_cache = reinterpret_cast<bf16*>(cache[2 * c + 1]);
    pdl_wait();
    pdl_launch_dependents();
    const float2* row = reinterpret_cast<const float2*>(qkv + (size_t)t * n_pairs * 2);
    float2 next = threadIdx.x < n_pairs ? row[threadIdx.x] : make_float2(0.f, 0.f);  // in flight meanwhile
    const int p = pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const double two_pi = 6.283185307179586476925286766559, inv_two_pi = 0.15915494309189533576888376337251;
        const double ang = (double)p * (i == i0 ? freq0 : exp(-2.0 * i / Dh * log((double)theta)));
        float s, c;
        sincosf((float)(ang - floor(ang * inv_two_pi) * two_pi), &s, &c);
        cs[i] = make_float2(c, s);
    }
    __syncthreads();
    const float2* b2 = reinterpret_cast<const float2*>(bias);
    const size_t row_off = (size_t)(p % R) * Hkv * Dh;
    unsigned* q32 = reinterpret_cast<unsigned*>(q_out + (size_t)t * H * Dh);
    unsigned* k32 = reinterpret_cast<unsigned*>(k_cache + row_off);
    unsigned* v32 = reinterpret_cast<unsigned*>(v_cache + row_off);
    const int n_rot = (H + Hkv) * half;  // pairs of q and k, rotated; the v pairs follow
    for (int j = threadIdx.x; j < n_pairs; j += blockDim.x) {
        float2 v = next;
        if (j + (int)blockDim.x < n_pairs) next = row[j + blockDim.x];
        if (bias) {
            const float2 b = b2[j];
            v.x += b.x, v.y += b.y;
        }
        if (j < n_rot) {
            const float2 a = cs[j % half];
            v = make_float2(v.x * a.x - v.y * a.y, v.x * a.y + v.y * a.x);
        }
        const unsigned packed = pack_bf16x2(v.x, v.y);
        if (j < H * half) q32[j] = packed;
        else if (j < n_rot) k32[j - H * half] = packed;
        else v32[j - n_rot] = packed;
    }
}
