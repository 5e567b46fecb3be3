"""The hashing workload: job sources (Stratum V1, the local pool), the SHA-256d OpenCL kernel,
and the miner loop that joins them."""
