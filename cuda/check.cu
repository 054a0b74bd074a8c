// Non-finite BF16 weights (NaN or Inf: all exponent bits set), found once at upload: flag[0] becomes 1
// when any of the n values of x has exponent 0xFF. A grid-stride loop of 8-byte loads; memory-bound.
// flag_differs: flag[0] becomes 1 when two arrays differ in any bit (gemm.py's tuning keeps only the
// cuBLASLt algorithms whose output is bitwise cublasGemmEx's).
#include "common.cuh"

extern "C" __global__ void flag_non_finite(const unsigned short* __restrict__ x,  // x: [n] bf16 bits
                                           unsigned long long n,
                                           unsigned int* __restrict__ flag) {    // flag: [1] u32
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned int bad = 0;
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if ((size_t)x % 8 == 0) {
        const uint2* x4 = reinterpret_cast<const uint2*>(x);
        for (; i < n / 4; i += stride) {
            const uint2 v = x4[i];
            bad |= ((v.x & 0x7F80u) == 0x7F80u) | ((v.x & 0x7F800000u) == 0x7F800000u);
            bad |= ((v.y & 0x7F80u) == 0x7F80u) | ((v.y & 0x7F800000u) == 0x7F800000u);
        }
        i = n / 4 * 4 + (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    }
    for (; i < n; i += stride) bad |= (x[i] & 0x7F80u) == 0x7F80u;
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1u);
}

// The same for float32 values (norm weights, biases): exponent 0xFF.
extern "C" __global__ void flag_non_finite_f32(const unsigned int* __restrict__ x,  // x: [n] f32 bits
                                               unsigned long long n,
                                               unsigned int* __restrict__ flag) {  // flag: [1] u32
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned int bad = 0;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        bad |= (x[i] & 0x7F800000u) == 0x7F800000u;
    if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1u);
}

// Whether a and b (n 32-bit words each) differ anywhere: flag[0] |= 1.
extern "C" __global__ void flag_differs(const unsigned int* __restrict__ a,  // a: [n] u32
                                        const unsigned int* __restrict__ b,  // b: [n] u32
                                        unsigned long long n,
                                        unsigned int* __restrict__ flag) {   // flag: [1] u32
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned int diff = 0;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        diff |= a[i] ^ b[i];
    if (__syncthreads_or(diff != 0) && threadIdx.x == 0) atomicOr(flag, 1u);
}
