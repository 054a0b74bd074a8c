// Greedy token choice on the device (SPEC §6). Per stream b: argmax of logits[b] (lowest index on
// ties, the first NaN wins, as numpy.argmax), stored in tokens[b] and in the stream's history ring at
// pos[b] % K, then pos[b] += 1 — so a captured decoder step needs no host sync.
// Grid (n_blocks, B): each block reduces one slice of a row and leaves (value, index) in the
// workspace; the last block of a row to finish (counted with an atomic) merges the slices, does the
// bookkeeping and resets its counter to 0, so the workspace is ready for the next launch or replay.
// A PDL launch (common.cuh) waits for the logits before anything else: nothing here is independent.
#include "common.cuh"

// Is (a, ia) ahead of (b, ib)? NaN ranks above everything, then value, then lower index.
__device__ __forceinline__ bool ahead(float a, int ia, float b, int ib) {
    const bool na = a != a, nb = b != b;
    if (na || nb) return na && (!nb || ia < ib);
    return a > b || (a == b && ia < ib);
}

__device__ __forceinline__ void take(float v, int i, float& best, int& ibest) {
    if (ahead(v, i, best, ibest)) best = v, ibest = i;
}

__device__ __forceinline__ void warp_argmax(float& best, int& ibest) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, ibest, o);
        take(ob, oi, best, ibest);
    }
}

extern "C" __global__ void argmax_advance(const float* __restrict__ logits,  // logits: [B, V] f32
                                          int V,
                                          int* __restrict__ tokens,   // tokens: [B] int32, out
                                          int* __restrict__ pos,      // pos: [B] int32, in/out (+1)
                                          int* __restrict__ history,  // history: [B, K] int32 ring, out
                                          int K,
                                          int* __restrict__ ws) {     // ws: [B, 2·n_blocks + 1] int32, zeros
    pdl_wait();
    pdl_launch_dependents();
    const int b = blockIdx.y, blk = blockIdx.x, nblk = gridDim.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float* row = logits + (size_t)b * V;
    float best = -__int_as_float(0x7f800000);
    int ibest = 0x7fffffff;  // an empty slice loses to every element
    if (V % 4 == 0 && (size_t)logits % 16 == 0) {
        const float4* r4 = reinterpret_cast<const float4*>(row);
        const int n4 = V / 4, per = (n4 + nblk - 1) / nblk, end = min(n4, (blk + 1) * per);
#pragma unroll 4
        for (int i = blk * per + threadIdx.x; i < end; i += blockDim.x) {
            const float4 v = r4[i];
            take(v.x, 4 * i, best, ibest);
            take(v.y, 4 * i + 1, best, ibest);
            take(v.z, 4 * i + 2, best, ibest);
            take(v.w, 4 * i + 3, best, ibest);
        }
    } else {
        const int per = (V + nblk - 1) / nblk, end = min(V, (blk + 1) * per);
        for (int i = blk * per + threadIdx.x; i < end; i += blockDim.x) take(row[i], i, best, ibest);
    }
    warp_argmax(best, ibest);
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ bool last;
    if (lane == 0) sv[warp] = best, si[warp] = ibest;
    __syncthreads();
    int* slots = ws + (size_t)b * (2 * nblk + 1);  // values (as bits) | indices | counter
    if (warp == 0) {
        const bool has = lane < (int)(blockDim.x >> 5);
        best = has ? sv[lane] : -__int_as_float(0x7f800000);
        ibest = has ? si[lane] : 0x7fffffff;
        warp_argmax(best, ibest);
        if (lane == 0) {
            slots[blk] = __float_as_int(best);
            slots[nblk + blk] = ibest;
            __threadfence();  // the slice result is visible before the count says so
            last = atomicAdd(reinterpret_cast<unsigned*>(slots + 2 * nblk), 1u) == (unsigned)(nblk - 1);
        }
    }
    __syncthreads();
    if (!last || warp != 0) return;
    best = -__int_as_float(0x7f800000);
    ibest = 0x7fffffff;
    for (int i = lane; i < nblk; i += 32) {
        const volatile int* vs = slots;
        take(__int_as_float(vs[i]), vs[nblk + i], best, ibest);
    }
    warp_argmax(best, ibest);
    if (lane == 0) {
        const int p = pos[b];
        tokens[b] = ibest;
        history[(size_t)b * K + p % K] = ibest;
        pos[b] = p + 1;
        slots[2 * nblk] = 0;  // ready for the next launch
    }
}
