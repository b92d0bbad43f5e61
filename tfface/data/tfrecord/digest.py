"""The digest that `manifest.json` records per shard: algorithms and hashing a file.

All three are cryptographic 256-bit digests (equal strength: 128-bit
collision resistance), so a manifest can vouch for every byte of a shard.
BLAKE3 (the `blake3` package, the reference implementation's bindings) is
the default: it uses the CPU's vector units (SSE4.1 to AVX-512) and measured
7.6 GB/s on one core here, against SHA-256's 1.9 GB/s with SHA instructions
(0.2-0.4 GB/s on CPUs without them) and BLAKE2b-256's 1.4 GB/s
(`benchmarks/transcode.py` times them end to end). SHA-256 and BLAKE2b-256
stay for manifests written before, and for readers who want them.
"""
import hashlib

import blake3

BLAKE3 = "blake3"
SHA256 = "sha256"
BLAKE2B_256 = "blake2b-256"
ALGORITHMS = (BLAKE3, SHA256, BLAKE2B_256)
# The fastest measured on the project's machine (AMD EPYC; docs/data.md, "Speed").
DEFAULT = BLAKE3


def new(algorithm: str):
  """A fresh `hashlib` object for `algorithm` (one of `ALGORITHMS`).

  Raises:
    ValueError: an algorithm tfface does not know.
  """
  if algorithm == BLAKE3:
    return blake3.blake3()
  if algorithm == SHA256:
    return hashlib.sha256()
  if algorithm == BLAKE2B_256:
    return hashlib.blake2b(digest_size=32)
  raise ValueError(f"unknown digest algorithm {algorithm!r}; expected one of "
                   f"{', '.join(ALGORITHMS)}")
