"""Converts an InsightFace `.rec` dataset into globally shuffled, sharded TFRecords.

  python tools/rec2tfrecord.py --rec_dir=DIR --output_dir=OUT [--num_shards=N]
      [--num_workers=W] [--seed=S] [--worker_index=I --num_workers_total=T]

DIR holds `train.rec`, `train.idx` and optionally `property`. OUT gets
`train-00000-of-000NN.tfrecord` shards and a verified `manifest.json`. A rerun
resumes where an interrupted one stopped (`--noresume` starts over).
"""
from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_REC_DIR = flags.DEFINE_string("rec_dir", None, "Directory with train.rec/train.idx/property.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for the TFRecord shards.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None,
                                   "Shard count (default: ~128 MB per shard, at least 16).",
                                   lower_bound=1)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None,
                                    "Worker processes on this machine (default: CPU count).",
                                    lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the global shuffle.", lower_bound=0)
_WORKER_INDEX = flags.DEFINE_integer("worker_index", 0,
                                     "This machine's share of the shards (0-based).",
                                     lower_bound=0)
_NUM_WORKERS_TOTAL = flags.DEFINE_integer("num_workers_total", 1,
                                          "Machines sharing the output directory.",
                                          lower_bound=1)
_RESUME = flags.DEFINE_bool("resume", True, "Keep complete shards of an interrupted run.")
# The choices are tfface.data.tfrecord.digest.ALGORITHMS (imported later, for a fast --help).
_DIGEST = flags.DEFINE_enum("digest", "blake3", ["blake3", "sha256", "blake2b-256"],
                            "Shard digest recorded in manifest.json (all 256-bit, "
                            "cryptographic; blake3 is 4x faster than sha256 here).")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress lines.")
flags.mark_flags_as_required(["rec_dir", "output_dir"])


def main(argv):
  del argv  # unused
  from tfface.data.transcode import transcode  # after absl parsed the flags: fast --help
  result = transcode.transcode(
      _REC_DIR.value, _OUTPUT_DIR.value, num_shards=_NUM_SHARDS.value,
      num_workers=_NUM_WORKERS.value, seed=_SEED.value, worker_index=_WORKER_INDEX.value,
      num_workers_total=_NUM_WORKERS_TOTAL.value, resume=_RESUME.value,
      digest_algorithm=_DIGEST.value, progress=not _QUIET.value)
  print(result.summary())


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
