/*
 * SHA-256d nonce search, written the way FPGA OpenCL kernels are written.
 *
 * An FPGA OpenCL compiler (Intel aoc, Xilinx v++) turns a kernel into a pipeline: it wants a
 * single work-item (or a handful of them) running a simple loop with a fixed trip-count body,
 * fully unrolled rounds, no local-memory tricks and no vector types. So this kernel is plain
 * scalar code: each work-item walks its own contiguous slice of the nonce range, one nonce per
 * loop iteration, and appends candidates to a small found buffer. A GPU kernel (vectorised,
 * one nonce per work-item, huge NDRange) lives under agent/workloads/hashing.
 *
 * ABI "rigd-sha256d-search/1" (the host side is hal.opencl.FpgaCard.search):
 *   job[0..7]   SHA-256 midstate after the first 64 header bytes
 *   job[8..10]  header bytes 64..76 as three big-endian words (merkle tail, time, bits)
 *   nonce_start first nonce; header bytes 76..80 hold the nonce little-endian
 *   nonce_count how many nonces to try (the range wraps at 2^32)
 *   found[0]    number of candidates seen (may exceed found_capacity)
 *   found[1..]  up to found_capacity candidate nonces, in no particular order
 * A candidate is a nonce whose double hash ends in 32 zero bits (hash value < 2^224); the host
 * re-checks every candidate with hashlib against the real target.
 */

#define ROTR(x, n) rotate((uint)(x), (uint)(32 - (n)))
#define BSIG0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define BSIG1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define SSIG0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))
#define CH(x, y, z) bitselect((z), (y), (x))
#define MAJ(x, y, z) bitselect((x), (y), (x) ^ (z))

__constant uint K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

__constant uint IV[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

inline uint byte_swap(uint x) { return as_uint(as_uchar4(x).s3210); }

/* One SHA-256 compression of w[16] into state[8]; the message schedule rolls in w itself. */
inline void sha256_compress(uint *state, uint *w)
{
    uint a = state[0], b = state[1], c = state[2], d = state[3];
    uint e = state[4], f = state[5], g = state[6], h = state[7];
#pragma unroll
    for (int i = 0; i < 64; i++) {
        if (i >= 16) {
            w[i & 15] += SSIG1(w[(i - 2) & 15]) + w[(i - 7) & 15] + SSIG0(w[(i - 15) & 15]);
        }
        uint t1 = h + BSIG1(e) + CH(e, f, g) + K[i] + w[i & 15];
        uint t2 = BSIG0(a) + MAJ(a, b, c);
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d;
    state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

__kernel void sha256d_search(__global const uint *job, uint nonce_start, uint nonce_count,
                             __global volatile uint *found, uint found_capacity)
{
    ulong lanes = get_global_size(0);
    ulong per_lane = ((ulong)nonce_count + lanes - 1) / lanes;
    ulong first = get_global_id(0) * per_lane;
    ulong last = min(first + per_lane, (ulong)nonce_count);

    for (ulong i = first; i < last; i++) {
        uint nonce = nonce_start + (uint)i;
        uint w[16];
        uint state[8];
#pragma unroll
        for (int k = 0; k < 8; k++) state[k] = job[k];
        w[0] = job[8]; w[1] = job[9]; w[2] = job[10]; w[3] = byte_swap(nonce);
        w[4] = 0x80000000;
#pragma unroll
        for (int k = 5; k < 15; k++) w[k] = 0;
        w[15] = 640;  /* 80-byte message */
        sha256_compress(state, w);

#pragma unroll
        for (int k = 0; k < 8; k++) w[k] = state[k];
        w[8] = 0x80000000;
#pragma unroll
        for (int k = 9; k < 15; k++) w[k] = 0;
        w[15] = 256;  /* 32-byte message */
#pragma unroll
        for (int k = 0; k < 8; k++) state[k] = IV[k];
        sha256_compress(state, w);

        if (state[7] == 0) {
            uint slot = atomic_inc(&found[0]);
            if (slot < found_capacity) found[1 + slot] = nonce;
        }
    }
}
