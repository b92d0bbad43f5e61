"""Prints the summary block at the end of `make demo`: result, time, where things are.

  python tools/demo_summary.py --demo_dir=demo_run

Reads what the demo's steps wrote: `DIR/train/verification.json` (Accuracy-Flip
on synth_val before and after training), `DIR/verify_export.json` (the
export verified again), `DIR/.started` (the demo's start, seconds since the
epoch), and names the export, the TensorBoard logs and the commands to look
at them.
"""
import json
import os
import time

from absl import flags

try:
  from tfface_tools import _cli
except ImportError:
  import _cli

_DEMO_DIR = flags.DEFINE_string("demo_dir", "demo_run", "The demo's directory.")


def _load(path):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: not written; did every step of the demo run?") from None


def main(argv):
  del argv  # unused
  root = _DEMO_DIR.value
  train, export = os.path.join(root, "train"), os.path.join(root, "serving", "face")
  target = _load(os.path.join(train, "verification.json"))["synth_val"]
  exported = _load(os.path.join(root, "verify_export.json"))["synth_val"]
  with open(os.path.join(root, ".started")) as f:
    elapsed = time.time() - float(f.read())
  before = target.get("accuracy_at_start", float("nan"))
  after = target["accuracy_flip_mean"]
  bar = "=" * 78
  print("\n".join([
      bar,
      "tfface demo: Accuracy-Flip on synth_val (identities never seen in training)",
      f"  before -> after training: {before:.4f} -> {after:.4f} "
      f"({after - before:+.4f}); the export verified again: "
      f"{exported['accuracy_flip_mean']:.4f}",
      f"  total time: {int(elapsed // 60)} min {elapsed % 60:.0f} s",
      f"  SavedModel for TF Serving: {export}/1   (training run: {train})",
      f"  TensorBoard logs: {train}/tensorboard",
      "look at them:",
      f"  tensorboard --logdir {train}/tensorboard",
      f"  python tools/compare.py --model={export} --bin={root}/rec/synth_val.bin --pair=7",
      f"  python tools/verify.py --model={export} --bins={root}/rec/synth_val.bin",
      bar]))


def run():
  _cli.run(main, tensorflow=False)


if __name__ == "__main__":
  run()
