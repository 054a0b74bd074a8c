// Causal 1-D convolution as im2col + GEMM (SPEC §3.1): the conv weight [out, in, K] flattened to
// [out, in·K] multiplies cols [T_out, C·K] (voxtral/gpu/conv.py).
#include "common.cuh"

// The columns of many streams at once: each output row names its K source rows, so rows of any
// streams (and carried state) can sit anywhere in x. cols[r, c·K + k] = bf16(x[rows[r·K + k], c]), x [N, C].
template <typename T>
__device__ __forceinline__ void im2col_rows_body(const T* __restrict__ x, int C,
                                                 const int* __restrict__ rows, bf16* __restrict__ cols,
                                                 int R, int K) {
    const int CK = C * K;
    const size_t total = (size_t)R * CK;
    const size_t step = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int r = (int)(i / CK), ck = (int)(i % CK);
        const int c = ck / K, k = ck % K;
        const size_t src = (size_t)rows[r * K + k] * C + c;
        if constexpr (sizeof(T) == 4) {
            cols[i] = f32_to_bf16(x[src]);
        } else {
            cols[i] = x[src];
        }
    }
}

extern "C" __global__ void im2col_rows_f32(const float* __restrict__ x, int C, const int* __restrict__ rows,
                                           bf16* __restrict__ cols, int R, int K) {
    im2col_rows_body<float>(x, C, rows, cols, R, K);
}

extern "C" __global__ void im2col_rows_bf16(const bf16* __restrict__ x, int C, const int* __restrict__ rows,
                                            bf16* __restrict__ cols, int R, int K) {
    im2col_rows_body<bf16>(x, C, rows, cols, R, K);
}
