/* SHA-256d for Bitcoin block headers, one vector of VW nonces per step.
 *
 * The host (kernel.py) hashes the first 64 header bytes into a midstate and runs the first
 * three rounds of the second chunk, which do not depend on the nonce; it also folds the
 * message-schedule words that only depend on the header (w16, w17, p18, p19, p31, p32).
 * The constant words of both hashes (padding, lengths) are literals here, so the compiler
 * folds them. The second hash stops after round 60: the hash's last 32-bit word is
 * IV7 + e60 (rounds 57..60 keep only what e60 needs; the compiler drops the rest), and
 * only nonces whose last word passes `target_top` are reported; the host checks the full
 * target with hashlib before anything is submitted.
 *
 * Nonce convention: `nonce` is the header's little-endian nonce integer (header bytes 76..80).
 * SHA-256 reads that field big-endian, so the message word is bswap(nonce). `base` is
 * aligned to VW, so the lanes only differ in the nonce's low byte: w3 = bswap(base) + lane<<24.
 *
 * Found buffer: found[0] counts candidates (it may exceed `capacity`: the host then rescans
 * the range in halves), found[1 + i] holds candidate i. No value is reserved for "none", so
 * nonce 0 is a valid find.
 */

#ifndef VW
#define VW 8
#endif

#if VW == 1
typedef uint u;
#define LANE_W3 0u
#elif VW == 2
typedef uint2 u;
typedef int2 s;
#define LANE_W3 ((uint2)(0u, 1u) << 24)
#elif VW == 4
typedef uint4 u;
typedef int4 s;
#define LANE_W3 ((uint4)(0u, 1u, 2u, 3u) << 24)
#elif VW == 8
typedef uint8 u;
typedef int8 s;
#define LANE_W3 ((uint8)(0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u) << 24)
#elif VW == 16
typedef uint16 u;
typedef int16 s;
#define LANE_W3 ((uint16)(0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 10u, 11u, 12u, 13u, 14u, 15u) << 24)
#else
#error "VW must be 1, 2, 4, 8 or 16"
#endif

#define ROTR(x, n) rotate((x), (u)(32u - (n)))
#define S0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define S1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define s0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define s1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))
/* Written so that LLVM 15 emits one vpternlogd for Ch (bitselect() became and/andn/add:
 * 7% slower on AVX-512). Maj still takes two; forcing one costs a register copy instead. */
#define CH(e, f, g) ((g) ^ ((e) & ((f) ^ (g))))
#define MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) | (b))))
#define BSWAP(x) (rotate((x) & 0x00ff00ffu, (u)24u) | rotate((x) & 0xff00ff00u, (u)8u))

/* One round; kw is K[t] + W[t]. The new a lands in h's slot, the new e in d's. */
#define RND(a, b, c, d, e, f, g, h, kw)                     \
    {                                                       \
        u t1_ = (h) + S1(e) + CH(e, f, g) + (kw);           \
        (d) += t1_;                                         \
        (h) = t1_ + S0(a) + MAJ(a, b, c);                   \
    }

/* A round whose h + K[t] + W[t] is a host-precomputed constant. */
#define RNDH(a, b, c, d, e, f, g, h, hkw)                   \
    {                                                       \
        u t1_ = (hkw) + S1(e) + CH(e, f, g);                \
        (d) += t1_;                                         \
        (h) = t1_ + S0(a) + MAJ(a, b, c);                   \
    }

/* Padding work-items past the requested range report nothing, so a full buffer means
 * the range itself has more candidates than slots. */
static inline void record(volatile __global uint *found, uint capacity, uint nonce,
                          uint range_start, uint range_last)
{
    if (nonce - range_start > range_last)
        return;
    uint slot = atomic_inc(&found[0]);
    if (slot < capacity)
        found[1 + slot] = nonce;
}

__kernel void sha256d_scan(
    const uint base,          /* first nonce of this launch, a multiple of VW */
    const uint iterations,    /* nonce vectors per work-item */
    const uint target_top,    /* report a nonce iff bswap(last hash word) <= target_top */
    const uint m0, const uint m1, const uint m2, const uint m3,  /* midstate */
    const uint m4, const uint m5, const uint m6, const uint m7,
    const uint pre_a3, const uint pre_e3,       /* round 3 without its W3 */
    const uint a0, const uint a1, const uint a2, const uint e1, const uint e2,
    const uint r4, const uint r5, const uint r6, /* h + K + W of rounds 4..6 */
    const uint w16, const uint w17, const uint p18, const uint p19,
    const uint p31, const uint p32,
    volatile __global uint *found, const uint capacity,
    const uint range_start, const uint range_last)    /* range_last = count - 1 */
{
    uint first = base + (uint)get_global_id(0) * iterations * VW;
    for (uint it = 0; it < iterations; it++) {  /* body left unindented: it is the whole kernel */
    uint nv = first + it * VW;
    u w3 = (u)((nv << 24) | ((nv & 0xff00u) << 8) | ((nv >> 8) & 0xff00u) | (nv >> 24)) + LANE_W3;

    u X0, X1, X2, X3, X4, X5, X6, X7, e60;
    /* ---- first hash, second chunk, from round 4 ---- */
    {
    u A = pre_a3 + w3, B = (u)a2, C = (u)a1, D = (u)a0;
    u E = pre_e3 + w3, F = (u)e2, G = (u)e1, H;
    RNDH(A, B, C, D, E, F, G, H, r4);
    RNDH(H, A, B, C, D, E, F, G, r5);
    RNDH(G, H, A, B, C, D, E, F, r6);
    RND(F, G, H, A, B, C, D, E, 0xab1c5ed5u);
    RND(E, F, G, H, A, B, C, D, 0xd807aa98u);
    RND(D, E, F, G, H, A, B, C, 0x12835b01u);
    RND(C, D, E, F, G, H, A, B, 0x243185beu);
    RND(B, C, D, E, F, G, H, A, 0x550c7dc3u);
    RND(A, B, C, D, E, F, G, H, 0x72be5d74u);
    RND(H, A, B, C, D, E, F, G, 0x80deb1feu);
    RND(G, H, A, B, C, D, E, F, 0x9bdc06a7u);
    RND(F, G, H, A, B, C, D, E, 0xc19bf3f4u);
    RND(E, F, G, H, A, B, C, D, (0xe49b69c1u + w16));
    RND(D, E, F, G, H, A, B, C, (0xefbe4786u + w17));
    u W18 = p18 + s0(w3);
    RND(C, D, E, F, G, H, A, B, 0x0fc19dc6u + W18);
    u W19 = p19 + w3;
    RND(B, C, D, E, F, G, H, A, 0x240ca1ccu + W19);
    u W20 = s1(W18) + 0x80000000u;
    RND(A, B, C, D, E, F, G, H, 0x2de92c6fu + W20);
    u W21 = s1(W19);
    RND(H, A, B, C, D, E, F, G, 0x4a7484aau + W21);
    u W22 = s1(W20) + 640u;
    RND(G, H, A, B, C, D, E, F, 0x5cb0a9dcu + W22);
    u W23 = s1(W21) + w16;
    RND(F, G, H, A, B, C, D, E, 0x76f988dau + W23);
    u W24 = s1(W22) + w17;
    RND(E, F, G, H, A, B, C, D, 0x983e5152u + W24);
    u W25 = s1(W23) + W18;
    RND(D, E, F, G, H, A, B, C, 0xa831c66du + W25);
    u W26 = s1(W24) + W19;
    RND(C, D, E, F, G, H, A, B, 0xb00327c8u + W26);
    u W27 = s1(W25) + W20;
    RND(B, C, D, E, F, G, H, A, 0xbf597fc7u + W27);
    u W28 = s1(W26) + W21;
    RND(A, B, C, D, E, F, G, H, 0xc6e00bf3u + W28);
    u W29 = s1(W27) + W22;
    RND(H, A, B, C, D, E, F, G, 0xd5a79147u + W29);
    u W30 = s1(W28) + W23 + 0x00a00055u;
    RND(G, H, A, B, C, D, E, F, 0x06ca6351u + W30);
    u W31 = s1(W29) + W24 + p31;
    RND(F, G, H, A, B, C, D, E, 0x14292967u + W31);
    u W32 = s1(W30) + W25 + p32;
    RND(E, F, G, H, A, B, C, D, 0x27b70a85u + W32);
    u W33 = s1(W31) + W26 + s0(W18) + w17;
    RND(D, E, F, G, H, A, B, C, 0x2e1b2138u + W33);
    u W34 = s1(W32) + W27 + s0(W19) + W18;
    RND(C, D, E, F, G, H, A, B, 0x4d2c6dfcu + W34);
    u W35 = s1(W33) + W28 + s0(W20) + W19;
    RND(B, C, D, E, F, G, H, A, 0x53380d13u + W35);
    u W36 = s1(W34) + W29 + s0(W21) + W20;
    RND(A, B, C, D, E, F, G, H, 0x650a7354u + W36);
    u W37 = s1(W35) + W30 + s0(W22) + W21;
    RND(H, A, B, C, D, E, F, G, 0x766a0abbu + W37);
    u W38 = s1(W36) + W31 + s0(W23) + W22;
    RND(G, H, A, B, C, D, E, F, 0x81c2c92eu + W38);
    u W39 = s1(W37) + W32 + s0(W24) + W23;
    RND(F, G, H, A, B, C, D, E, 0x92722c85u + W39);
    u W40 = s1(W38) + W33 + s0(W25) + W24;
    RND(E, F, G, H, A, B, C, D, 0xa2bfe8a1u + W40);
    u W41 = s1(W39) + W34 + s0(W26) + W25;
    RND(D, E, F, G, H, A, B, C, 0xa81a664bu + W41);
    u W42 = s1(W40) + W35 + s0(W27) + W26;
    RND(C, D, E, F, G, H, A, B, 0xc24b8b70u + W42);
    u W43 = s1(W41) + W36 + s0(W28) + W27;
    RND(B, C, D, E, F, G, H, A, 0xc76c51a3u + W43);
    u W44 = s1(W42) + W37 + s0(W29) + W28;
    RND(A, B, C, D, E, F, G, H, 0xd192e819u + W44);
    u W45 = s1(W43) + W38 + s0(W30) + W29;
    RND(H, A, B, C, D, E, F, G, 0xd6990624u + W45);
    u W46 = s1(W44) + W39 + s0(W31) + W30;
    RND(G, H, A, B, C, D, E, F, 0xf40e3585u + W46);
    u W47 = s1(W45) + W40 + s0(W32) + W31;
    RND(F, G, H, A, B, C, D, E, 0x106aa070u + W47);
    u W48 = s1(W46) + W41 + s0(W33) + W32;
    RND(E, F, G, H, A, B, C, D, 0x19a4c116u + W48);
    u W49 = s1(W47) + W42 + s0(W34) + W33;
    RND(D, E, F, G, H, A, B, C, 0x1e376c08u + W49);
    u W50 = s1(W48) + W43 + s0(W35) + W34;
    RND(C, D, E, F, G, H, A, B, 0x2748774cu + W50);
    u W51 = s1(W49) + W44 + s0(W36) + W35;
    RND(B, C, D, E, F, G, H, A, 0x34b0bcb5u + W51);
    u W52 = s1(W50) + W45 + s0(W37) + W36;
    RND(A, B, C, D, E, F, G, H, 0x391c0cb3u + W52);
    u W53 = s1(W51) + W46 + s0(W38) + W37;
    RND(H, A, B, C, D, E, F, G, 0x4ed8aa4au + W53);
    u W54 = s1(W52) + W47 + s0(W39) + W38;
    RND(G, H, A, B, C, D, E, F, 0x5b9cca4fu + W54);
    u W55 = s1(W53) + W48 + s0(W40) + W39;
    RND(F, G, H, A, B, C, D, E, 0x682e6ff3u + W55);
    u W56 = s1(W54) + W49 + s0(W41) + W40;
    RND(E, F, G, H, A, B, C, D, 0x748f82eeu + W56);
    u W57 = s1(W55) + W50 + s0(W42) + W41;
    RND(D, E, F, G, H, A, B, C, 0x78a5636fu + W57);
    u W58 = s1(W56) + W51 + s0(W43) + W42;
    RND(C, D, E, F, G, H, A, B, 0x84c87814u + W58);
    u W59 = s1(W57) + W52 + s0(W44) + W43;
    RND(B, C, D, E, F, G, H, A, 0x8cc70208u + W59);
    u W60 = s1(W58) + W53 + s0(W45) + W44;
    RND(A, B, C, D, E, F, G, H, 0x90befffau + W60);
    u W61 = s1(W59) + W54 + s0(W46) + W45;
    RND(H, A, B, C, D, E, F, G, 0xa4506cebu + W61);
    u W62 = s1(W60) + W55 + s0(W47) + W46;
    RND(G, H, A, B, C, D, E, F, 0xbef9a3f7u + W62);
    u W63 = s1(W61) + W56 + s0(W48) + W47;
    RND(F, G, H, A, B, C, D, E, 0xc67178f2u + W63);

    X0 = m0 + E; X1 = m1 + F; X2 = m2 + G; X3 = m3 + H;
    X4 = m4 + A; X5 = m5 + B; X6 = m6 + C; X7 = m7 + D;
    }

    /* ---- second hash: one chunk, constant IV, constant padding words ---- */
    {
    u A = (u)0x6a09e667u, B = (u)0xbb67ae85u, C = (u)0x3c6ef372u, D = (u)0xa54ff53au;
    u E = (u)0x510e527fu, F = (u)0x9b05688cu, G = (u)0x1f83d9abu, H = (u)0x5be0cd19u;
    RND(A, B, C, D, E, F, G, H, 0x428a2f98u + X0);
    RND(H, A, B, C, D, E, F, G, 0x71374491u + X1);
    RND(G, H, A, B, C, D, E, F, 0xb5c0fbcfu + X2);
    RND(F, G, H, A, B, C, D, E, 0xe9b5dba5u + X3);
    RND(E, F, G, H, A, B, C, D, 0x3956c25bu + X4);
    RND(D, E, F, G, H, A, B, C, 0x59f111f1u + X5);
    RND(C, D, E, F, G, H, A, B, 0x923f82a4u + X6);
    RND(B, C, D, E, F, G, H, A, 0xab1c5ed5u + X7);
    RND(A, B, C, D, E, F, G, H, 0x5807aa98u);
    RND(H, A, B, C, D, E, F, G, 0x12835b01u);
    RND(G, H, A, B, C, D, E, F, 0x243185beu);
    RND(F, G, H, A, B, C, D, E, 0x550c7dc3u);
    RND(E, F, G, H, A, B, C, D, 0x72be5d74u);
    RND(D, E, F, G, H, A, B, C, 0x80deb1feu);
    RND(C, D, E, F, G, H, A, B, 0x9bdc06a7u);
    RND(B, C, D, E, F, G, H, A, 0xc19bf274u);
    u W16 = s0(X1) + X0;
    RND(A, B, C, D, E, F, G, H, 0xe49b69c1u + W16);
    u W17 = s0(X2) + X1 + 0x00a00000u;
    RND(H, A, B, C, D, E, F, G, 0xefbe4786u + W17);
    u W18 = s1(W16) + s0(X3) + X2;
    RND(G, H, A, B, C, D, E, F, 0x0fc19dc6u + W18);
    u W19 = s1(W17) + s0(X4) + X3;
    RND(F, G, H, A, B, C, D, E, 0x240ca1ccu + W19);
    u W20 = s1(W18) + s0(X5) + X4;
    RND(E, F, G, H, A, B, C, D, 0x2de92c6fu + W20);
    u W21 = s1(W19) + s0(X6) + X5;
    RND(D, E, F, G, H, A, B, C, 0x4a7484aau + W21);
    u W22 = s1(W20) + s0(X7) + X6 + 256u;
    RND(C, D, E, F, G, H, A, B, 0x5cb0a9dcu + W22);
    u W23 = s1(W21) + W16 + X7 + 0x11002000u;
    RND(B, C, D, E, F, G, H, A, 0x76f988dau + W23);
    u W24 = s1(W22) + W17 + 0x80000000u;
    RND(A, B, C, D, E, F, G, H, 0x983e5152u + W24);
    u W25 = s1(W23) + W18;
    RND(H, A, B, C, D, E, F, G, 0xa831c66du + W25);
    u W26 = s1(W24) + W19;
    RND(G, H, A, B, C, D, E, F, 0xb00327c8u + W26);
    u W27 = s1(W25) + W20;
    RND(F, G, H, A, B, C, D, E, 0xbf597fc7u + W27);
    u W28 = s1(W26) + W21;
    RND(E, F, G, H, A, B, C, D, 0xc6e00bf3u + W28);
    u W29 = s1(W27) + W22;
    RND(D, E, F, G, H, A, B, C, 0xd5a79147u + W29);
    u W30 = s1(W28) + W23 + 0x00400022u;
    RND(C, D, E, F, G, H, A, B, 0x06ca6351u + W30);
    u W31 = s1(W29) + W24 + s0(W16) + 256u;
    RND(B, C, D, E, F, G, H, A, 0x14292967u + W31);
    u W32 = s1(W30) + W25 + s0(W17) + W16;
    RND(A, B, C, D, E, F, G, H, 0x27b70a85u + W32);
    u W33 = s1(W31) + W26 + s0(W18) + W17;
    RND(H, A, B, C, D, E, F, G, 0x2e1b2138u + W33);
    u W34 = s1(W32) + W27 + s0(W19) + W18;
    RND(G, H, A, B, C, D, E, F, 0x4d2c6dfcu + W34);
    u W35 = s1(W33) + W28 + s0(W20) + W19;
    RND(F, G, H, A, B, C, D, E, 0x53380d13u + W35);
    u W36 = s1(W34) + W29 + s0(W21) + W20;
    RND(E, F, G, H, A, B, C, D, 0x650a7354u + W36);
    u W37 = s1(W35) + W30 + s0(W22) + W21;
    RND(D, E, F, G, H, A, B, C, 0x766a0abbu + W37);
    u W38 = s1(W36) + W31 + s0(W23) + W22;
    RND(C, D, E, F, G, H, A, B, 0x81c2c92eu + W38);
    u W39 = s1(W37) + W32 + s0(W24) + W23;
    RND(B, C, D, E, F, G, H, A, 0x92722c85u + W39);
    u W40 = s1(W38) + W33 + s0(W25) + W24;
    RND(A, B, C, D, E, F, G, H, 0xa2bfe8a1u + W40);
    u W41 = s1(W39) + W34 + s0(W26) + W25;
    RND(H, A, B, C, D, E, F, G, 0xa81a664bu + W41);
    u W42 = s1(W40) + W35 + s0(W27) + W26;
    RND(G, H, A, B, C, D, E, F, 0xc24b8b70u + W42);
    u W43 = s1(W41) + W36 + s0(W28) + W27;
    RND(F, G, H, A, B, C, D, E, 0xc76c51a3u + W43);
    u W44 = s1(W42) + W37 + s0(W29) + W28;
    RND(E, F, G, H, A, B, C, D, 0xd192e819u + W44);
    u W45 = s1(W43) + W38 + s0(W30) + W29;
    RND(D, E, F, G, H, A, B, C, 0xd6990624u + W45);
    u W46 = s1(W44) + W39 + s0(W31) + W30;
    RND(C, D, E, F, G, H, A, B, 0xf40e3585u + W46);
    u W47 = s1(W45) + W40 + s0(W32) + W31;
    RND(B, C, D, E, F, G, H, A, 0x106aa070u + W47);
    u W48 = s1(W46) + W41 + s0(W33) + W32;
    RND(A, B, C, D, E, F, G, H, 0x19a4c116u + W48);
    u W49 = s1(W47) + W42 + s0(W34) + W33;
    RND(H, A, B, C, D, E, F, G, 0x1e376c08u + W49);
    u W50 = s1(W48) + W43 + s0(W35) + W34;
    RND(G, H, A, B, C, D, E, F, 0x2748774cu + W50);
    u W51 = s1(W49) + W44 + s0(W36) + W35;
    RND(F, G, H, A, B, C, D, E, 0x34b0bcb5u + W51);
    u W52 = s1(W50) + W45 + s0(W37) + W36;
    RND(E, F, G, H, A, B, C, D, 0x391c0cb3u + W52);
    u W53 = s1(W51) + W46 + s0(W38) + W37;
    RND(D, E, F, G, H, A, B, C, 0x4ed8aa4au + W53);
    u W54 = s1(W52) + W47 + s0(W39) + W38;
    RND(C, D, E, F, G, H, A, B, 0x5b9cca4fu + W54);
    u W55 = s1(W53) + W48 + s0(W40) + W39;
    RND(B, C, D, E, F, G, H, A, 0x682e6ff3u + W55);
    u W56 = s1(W54) + W49 + s0(W41) + W40;
    RND(A, B, C, D, E, F, G, H, 0x748f82eeu + W56);
    u W57 = s1(W55) + W50 + s0(W42) + W41;
    RND(H, A, B, C, D, E, F, G, 0x78a5636fu + W57);
    u W58 = s1(W56) + W51 + s0(W43) + W42;
    RND(G, H, A, B, C, D, E, F, 0x84c87814u + W58);
    u W59 = s1(W57) + W52 + s0(W44) + W43;
    RND(F, G, H, A, B, C, D, E, 0x8cc70208u + W59);
    u W60 = s1(W58) + W53 + s0(W45) + W44;
    /* round 60, only its new e: the hash's last word is IV7 + e60 */
    e60 = H + D + S1(A) + CH(A, B, C) + (0x90befffau + W60);
    }
    u last = e60 + 0x5be0cd19u;

#if VW == 1
    if (BSWAP(last) <= target_top)
        record(found, capacity, nv, range_start, range_last);
#else
    s hit = BSWAP(last) <= (u)target_top;
    if (any(hit)) {
        union { s v; int lane[VW]; } lanes;
        lanes.v = hit;
        for (uint i = 0; i < VW; i++)
            if (lanes.lane[i])
                record(found, capacity, nv + i, range_start, range_last);
    }
#endif
    }
}
