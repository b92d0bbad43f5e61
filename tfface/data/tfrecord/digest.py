"""The digest that `manifest.json` records per shard: algorithms and hashing a file.

Both algorithms are cryptographic 256-bit digests from `hashlib` (equal
strength: 128-bit collision resistance), so a manifest can vouch for every
byte of a shard. Which is cheaper depends on the CPU: SHA-256 runs at about
2 GB/s per core where the CPU has SHA instructions (AMD Zen, Intel Ice Lake
and later, ARMv8 crypto) and at 0.2-0.4 GB/s where it has not; BLAKE2b-256
runs at 0.9-1.4 GB/s on either. `benchmarks/transcode.py` times both.
"""
import hashlib

SHA256 = "sha256"
BLAKE2B_256 = "blake2b-256"
ALGORITHMS = (SHA256, BLAKE2B_256)
# Measured faster on the project's machines (SHA instructions; see
# docs/data.md); pass BLAKE2B_256 on CPUs without them.
DEFAULT = SHA256


def new(algorithm: str):
  """A fresh `hashlib` object for `algorithm` (one of `ALGORITHMS`).

  Raises:
    ValueError: an algorithm tfface does not know.
  """
  if algorithm == SHA256:
    return hashlib.sha256()
  if algorithm == BLAKE2B_256:
    return hashlib.blake2b(digest_size=32)
  raise ValueError(f"unknown digest algorithm {algorithm!r}; expected one of "
                   f"{', '.join(ALGORITHMS)}")
