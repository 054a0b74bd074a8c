// Causal 1-D convolution as im2col + GEMM (SPEC §3.1): the conv weight [out, in, K] flattened to
// [out, in·K] multiplies cols [T_out, C·K]. x is read through strides so that both the mel [M, T]
// input (st=1, sc=T) and a [T, C] activation (st=C, sc=1) need no transpose.
#include "common.cuh"

extern "C" __global__ void im2col_causal(const float* __restrict__ x,  // x: element (t, c) at x[t·st + c·sc] f32
                                         int T_in, int C, long long st, long long sc,
                                         bf16* __restrict__ cols,  // cols: [T_out, C·K] bf16
                                         int T_out, int K, int stride, int pad_left) {
    const int CK = C * K;
    const size_t total = (size_t)T_out * CK;
    const size_t step = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int t = (int)(i / CK), ck = (int)(i % CK);
        const int c = ck / K, k = ck % K;
        const int src = t * stride - pad_left + k;
        const float v = (src >= 0 && src < T_in) ? x[src * st + c * sc] : 0.0f;
        cols[i] = f32_to_bf16(v);
    }
}
