/* A wrong "bitstream": the search kernel's name and signature, but it never reports anything. */
__kernel void sha256d_search(__global const uint *job, uint nonce_start, uint nonce_count,
                             __global volatile uint *found, uint found_capacity)
{
}
