// RMSNorm with an optional residual bias folded in first (SPEC §3.3, §5).
// One block per row; blockDim.x a multiple of 32. Rows of length D % 4 == 0 on a 16-byte aligned
// x use float4 loads; other D (odd, 37, 1283) take the scalar loop. Every read depends on the previous
// kernel (x), so a PDL launch (common.cuh) waits first.
#include "common.cuh"

extern "C" __global__ void rms_norm(float* __restrict__ x,           // x: [T, D] f32, in/out (bias added)
                                    const float* __restrict__ bias,  // bias: [D] f32 or nullptr
                                    const float* __restrict__ w,     // w: [D] f32 gain
                                    bf16* __restrict__ out,          // out: [T, D] bf16
                                    int D, float eps) {
    pdl_wait();
    pdl_launch_dependents();
    float* row = x + (size_t)blockIdx.x * D;
    bf16* orow = out + (size_t)blockIdx.x * D;
    const bool vec = (D % 4 == 0) && (((size_t)x | (size_t)w | (size_t)(bias ? bias : w)) % 16 == 0) &&
                     ((size_t)out % 8 == 0);
    float ss = 0.0f;
    if (vec) {
        float4* r4 = reinterpret_cast<float4*>(row);
        const float4* b4 = reinterpret_cast<const float4*>(bias);
        for (int i = threadIdx.x; i < D / 4; i += blockDim.x) {
            float4 v = r4[i];
            if (bias) {
                const float4 b = b4[i];
                v.x += b.x, v.y += b.y, v.z += b.z, v.w += b.w;
                r4[i] = v;
            }
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            float v = row[i];
            if (bias) {
                v += bias[i];
                row[i] = v;
            }
            ss += v * v;
        }
    }
    const float inv = rsqrtf(block_sum(ss) / (float)D + eps);
    // Each thread re-reads only the elements it wrote above, so no barrier is needed for them.
    if (vec) {
        const float4* r4 = reinterpret_cast<const float4*>(row);
        const float4* w4 = reinterpret_cast<const float4*>(w);
        uint2* o2 = reinterpret_cast<uint2*>(orow);
        for (int i = threadIdx.x; i < D / 4; i += blockDim.x) {
            const float4 v = r4[i], g = w4[i];
            o2[i] = make_uint2(pack_bf16x2(v.x * inv * g.x, v.y * inv * g.y),
                               pack_bf16x2(v.z * inv * g.z, v.w * inv * g.w));
        }
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) orow[i] = f32_to_bf16(row[i] * inv * w[i]);
    }
}
