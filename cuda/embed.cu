// Decoder input (SPEC §5): h[t] = a[p] + E[token], the audio embedding read from its slot's ring.
// One block per position; 4 elements per step where D % 4 == 0 and the pointers are aligned. Every
// address depends on tokens and pos, which the previous step's argmax writes: a PDL launch waits first.
#include "common.cuh"

extern "C" __global__ void embed(const int* __restrict__ tokens,  // tokens: [T] int32
                                 const bf16* __restrict__ E,      // E: [V, D] bf16 token embeddings
                                 const float* __restrict__ audio, // audio: [C, Ra, D] f32 ring of audio embeddings
                                 const int* __restrict__ pos,     // pos: [T] int32
                                 const int* __restrict__ slot,    // slot: [T] int32
                                 float* __restrict__ h,           // h: [T, D] f32
                                 int D, int Ra) {
    pdl_wait();
    pdl_launch_dependents();
    const int t = blockIdx.x;
    const float* a = audio + ((size_t)slot[t] * Ra + (size_t)(pos[t] % Ra)) * D;
    const bf16* e = E + (size_t)tokens[t] * D;
    float* o = h + (size_t)t * D;
    if (D % 4 == 0 && ((size_t)audio | (size_t)h) % 16 == 0 && (size_t)E % 8 == 0) {
        for (int i = threadIdx.x; i < D / 4; i += blockDim.x) {
            const float4 av = reinterpret_cast<const float4*>(a)[i];
            const uint2 ev = reinterpret_cast<const uint2*>(e)[i];
            reinterpret_cast<float4*>(o)[i] = make_float4(av.x + bf16_lo(ev.x), av.y + bf16_hi(ev.x),
                                                          av.z + bf16_lo(ev.y), av.w + bf16_hi(ev.y));
        }
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = a[i] + bf16_to_f32(e[i]);
    }
}

// The decoder's audio rings filled (voxtral/gpu/decoder.py): row r, n floats at device address src[r],
// goes to row dst[r] of rings [C·Ra, n]: the new embeddings of every slot of a round in one launch, from
// wherever the encoder left them. One block per row; 16-byte moves where the addresses allow.
extern "C" __global__ void scatter_rows(const long long* __restrict__ src,  // src: [R] int64 row addresses
                                        const long long* __restrict__ dst,  // dst: [R] int64 ring row
                                        float* __restrict__ rings,          // rings: [C·Ra, n] f32
                                        int n) {
    const float* s = reinterpret_cast<const float*>(src[blockIdx.x]);
    float* o = rings + (size_t)dst[blockIdx.x] * n;
    if (n % 4 == 0 && ((size_t)s | (size_t)o) % 16 == 0) {
        for (int i = threadIdx.x; i < n / 4; i += blockDim.x)
            reinterpret_cast<float4*>(o)[i] = reinterpret_cast<const float4*>(s)[i];
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = s[i];
    }
}
