// Log-mel spectrogram on the device (SPEC §2.3), the steps around the two GEMMs of voxtral/gpu/mel.py:
//   X [T, 2F] = frames · [hann·cos | −hann·sin]ᵀ   (cuBLAS: the real DFT of each windowed frame)
//   P [T, F]  = power_spectrum(X)                   (|X|² per frequency)
//   L [M, T]  = filters [M, F] · Pᵀ                 (cuBLAS: the mel filter bank, already [M, T])
//   log_mel_normalize(L) in place: (max(log10(max(L, floor)), low) + shift) / scale
// NumPy twin: voxtral.audio.windows_log_mel (float64 there; float32 here, within ~3e-5 of it).
#include "common.cuh"

extern "C" __global__ void power_spectrum(const float* __restrict__ X,  // X: [T, 2F] f32, re | im
                                          float* __restrict__ P,        // P: [T, F] f32
                                          int T, int F) {
    const long long n = (long long)T * F;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long t = i / F, f = i - t * F;
        const float re = X[t * 2 * F + f], im = X[t * 2 * F + F + f];
        P[i] = re * re + im * im;
    }
}

extern "C" __global__ void log_mel_normalize(float* __restrict__ L,  // L: [M, T] f32 mel power, in place
                                             long long n,            // n: M·T
                                             float floor_value, float low, float shift, float scale) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float x = L[i];  // NaN stays NaN, as in NumPy's maximum
        L[i] = x != x ? x : (fmaxf(log10f(fmaxf(x, floor_value)), low) + shift) / scale;
    }
}
