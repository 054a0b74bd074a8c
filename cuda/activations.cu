// Elementwise activations of the GEMM outputs, written as the next GEMM's bf16 input.
// bias_gelu: conv stem, adapter (exact erf GELU, SPEC §3.1, §4); silu_mul: SwiGLU (SPEC §3.3, §5) of an
// f32 gate | up (the decoder's), silu_mul_bf16 of a bf16 one (the encoder's GEMM output: half the bytes);
// widen_bf16: bf16 → f32 (exact), the conv stem's outputs as the encoder's f32 residual stream.
// silu_mul and silu_mul_bf16 may be programmatic dependent launches (each waits for the kernel before
// it first).
// Grid-stride loops; 4 elements per step where the row length is a multiple of 4 and the pointers
// are aligned for 16-byte loads.
#include "common.cuh"

__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float silu(float x) { return x / (1.0f + __expf(-x)); }

extern "C" __global__ void bias_gelu(const float* __restrict__ x,     // x: [T, N] f32
                                     const float* __restrict__ bias,  // bias: [N] f32 or nullptr
                                     bf16* __restrict__ out,          // out: [T, N] bf16
                                     int T, int N) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = N % 4 == 0 && ((size_t)x | (size_t)(bias ? bias : x)) % 16 == 0 && (size_t)out % 8 == 0;
    if (vec) {
        const size_t n4 = N / 4, total = (size_t)T * n4;
        const float4* x4 = reinterpret_cast<const float4*>(x);
        const float4* b4 = reinterpret_cast<const float4*>(bias);
        uint2* o2 = reinterpret_cast<uint2*>(out);
        for (size_t i = start; i < total; i += stride) {
            float4 v = x4[i];
            if (bias) {
                const float4 b = b4[i % n4];
                v.x += b.x, v.y += b.y, v.z += b.z, v.w += b.w;
            }
            o2[i] = make_uint2(pack_bf16x2(gelu(v.x), gelu(v.y)), pack_bf16x2(gelu(v.z), gelu(v.w)));
        }
    } else {
        const size_t total = (size_t)T * N;
        for (size_t i = start; i < total; i += stride)
            out[i] = f32_to_bf16(gelu(x[i] + (bias ? bias[i % N] : 0.0f)));
    }
}

extern "C" __global__ void widen_bf16(const bf16* __restrict__ x,  // x: [n] bf16
                                      float* __restrict__ out,     // out: [n] f32
                                      unsigned long long n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if ((size_t)x % 8 == 0 && (size_t)out % 16 == 0) {
        const size_t n4 = n / 4;
        const uint2* x4 = reinterpret_cast<const uint2*>(x);
        float4* o4 = reinterpret_cast<float4*>(out);
        for (size_t i = start; i < n4; i += stride) {
            const uint2 v = x4[i];
            o4[i] = make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
                                __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u));
        }
        for (size_t i = 4 * n4 + start; i < n; i += stride) out[i] = bf16_to_f32(x[i]);
    } else {
        for (size_t i = start; i < n; i += stride) out[i] = bf16_to_f32(x[i]);
    }
}

extern "C" __global__ void silu_mul(const float* __restrict__ gu,  // gu: [T, 2F] f32: gate (w1) | up (w3)
                                    bf16* __restrict__ out,        // out: [T, F] bf16
                                    int T, int F) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    pdl_wait();  // gu comes from the kernel before (a PDL launch starts while it ends)
    pdl_launch_dependents();
    if (F % 4 == 0 && (size_t)gu % 16 == 0 && (size_t)out % 8 == 0) {
        const size_t f4 = F / 4, total = (size_t)T * f4;
        const float4* g4 = reinterpret_cast<const float4*>(gu);
        uint2* o2 = reinterpret_cast<uint2*>(out);
        for (size_t i = start; i < total; i += stride) {
            const size_t t = i / f4, f = i % f4;
            const float4 g = g4[t * 2 * f4 + f], u = g4[t * 2 * f4 + f4 + f];
            o2[i] = make_uint2(pack_bf16x2(silu(g.x) * u.x, silu(g.y) * u.y),
                               pack_bf16x2(silu(g.z) * u.z, silu(g.w) * u.w));
        }
    } else {
        const size_t total = (size_t)T * F;
        for (size_t i = start; i < total; i += stride) {
            const size_t t = i / F, f = i % F;
            out[i] = f32_to_bf16(silu(gu[t * 2 * F + f]) * gu[t * 2 * F + F + f]);
        }
    }
}

extern "C" __global__ void silu_mul_bf16(const bf16* __restrict__ gu,  // gu: [T, 2F] bf16: gate (w1) | up (w3)
                                         bf16* __restrict__ out,       // out: [T, F] bf16
                                         int T, int F) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    pdl_wait();
    pdl_launch_dependents();
    if (F % 4 == 0 && (size_t)gu % 8 == 0 && (size_t)out % 8 == 0) {
        const size_t f4 = F / 4, total = (size_t)T * f4;
        const uint2* g4 = reinterpret_cast<const uint2*>(gu);
        uint2* o2 = reinterpret_cast<uint2*>(out);
        for (size_t i = start; i < total; i += stride) {
            const size_t t = i / f4, f = i % f4;
            const uint2 g = g4[t * 2 * f4 + f], u = g4[t * 2 * f4 + f4 + f];
            o2[i] = make_uint2(pack_bf16x2(silu(bf16_lo(g.x)) * bf16_lo(u.x), silu(bf16_hi(g.x)) * bf16_hi(u.x)),
                               pack_bf16x2(silu(bf16_lo(g.y)) * bf16_lo(u.y), silu(bf16_hi(g.y)) * bf16_hi(u.y)));
        }
    } else {
        const size_t total = (size_t)T * F;
        for (size_t i = start; i < total; i += stride) {
            const size_t t = i / F, f = i % F;
            out[i] = f32_to_bf16(silu(bf16_to_f32(gu[t * 2 * F + f])) * bf16_to_f32(gu[t * 2 * F + F + f]));
        }
    }
}
