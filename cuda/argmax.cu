// Greedy token choice on the device (SPEC §6): one block per stream picks argmax of its logits
// (lowest index on ties and the first NaN wins, as numpy.argmax), stores it, logs it in the stream's
// history ring and advances the stream's position, so a captured step needs no host sync.
#include "common.cuh"

// Is (a, ia) ahead of (b, ib)? NaN ranks above everything, then value, then lower index.
__device__ __forceinline__ bool ahead(float a, int ia, float b, int ib) {
    const bool na = a != a, nb = b != b;
    if (na || nb) return na && (!nb || ia < ib);
    return a > b || (a == b && ia < ib);
}

extern "C" __global__ void argmax_advance(const float* __restrict__ logits,  // logits: [B, V] f32
                                          int V,
                                          int* __restrict__ tokens,   // tokens: [B] int32, out
                                          int* __restrict__ pos,      // pos: [B] int32, in/out (+1)
                                          int* __restrict__ history,  // history: [B, K] int32 ring, out
                                          int K) {
    const int b = blockIdx.x;
    const float* row = logits + (size_t)b * V;
    float best = -__int_as_float(0x7f800000);
    int ibest = 0x7fffffff;
    if (V % 4 == 0 && (size_t)logits % 16 == 0) {
        const float4* r4 = reinterpret_cast<const float4*>(row);
        const int n4 = V / 4;
        constexpr int UNROLL = 8;  // independent 16-byte loads in flight per thread
        int i = threadIdx.x;
        for (; i + (UNROLL - 1) * (int)blockDim.x < n4; i += UNROLL * blockDim.x) {
            float4 v[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) v[u] = r4[i + u * blockDim.x];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int j = 4 * (i + u * blockDim.x);
                if (ahead(v[u].x, j, best, ibest)) best = v[u].x, ibest = j;
                if (ahead(v[u].y, j + 1, best, ibest)) best = v[u].y, ibest = j + 1;
                if (ahead(v[u].z, j + 2, best, ibest)) best = v[u].z, ibest = j + 2;
                if (ahead(v[u].w, j + 3, best, ibest)) best = v[u].w, ibest = j + 3;
            }
        }
        for (; i < n4; i += blockDim.x) {
            const float4 v = r4[i];
            const int j = 4 * i;
            if (ahead(v.x, j, best, ibest)) best = v.x, ibest = j;
            if (ahead(v.y, j + 1, best, ibest)) best = v.y, ibest = j + 1;
            if (ahead(v.z, j + 2, best, ibest)) best = v.z, ibest = j + 2;
            if (ahead(v.w, j + 3, best, ibest)) best = v.w, ibest = j + 3;
        }
    } else {
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            if (ahead(row[i], i, best, ibest)) best = row[i], ibest = i;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, ibest, o);
        if (ahead(ob, oi, best, ibest)) best = ob, ibest = oi;
    }
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sv[warp] = best, si[warp] = ibest;
    __syncthreads();
    if (warp == 0) {
        best = lane < (int)(blockDim.x >> 5) ? sv[lane] : -__int_as_float(0x7f800000);
        ibest = lane < (int)(blockDim.x >> 5) ? si[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, ibest, o);
            if (ahead(ob, oi, best, ibest)) best = ob, ibest = oi;
        }
        if (lane == 0) {
            const int p = pos[b];
            tokens[b] = ibest;
            history[(size_t)b * K + p % K] = ibest;
            pos[b] = p + 1;
        }
    }
}
