"""Packaging for tfface: the library plus one console script per tool.

`tools/NAME.py` is importable as `tfface_tools.NAME` once installed, and
`tfface-NAME` runs its `run()` (absl `app.run(main)`); `configs/NAME.py`
installs as `tfface_configs`, where `tfface-train` finds the dataset configs.
"""
import pathlib
import re

import setuptools

ROOT = pathlib.Path(__file__).parent
TOOLS = sorted(
    p.stem for p in (ROOT / "tools").glob("*.py") if not p.stem.startswith("_")
)


def _requirements(name):
  lines = (ROOT / name).read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith(("#", "-r"))]


def _version():
  text = (ROOT / "tfface" / "__init__.py").read_text()
  return re.search(r'__version__ = "([^"]+)"', text).group(1)


setuptools.setup(
    name="tfface",
    version=_version(),
    description="InsightFace face-recognition training (ArcFace, CosFace, ResNet-IR, MobileFaceNet) in TensorFlow 2 / Keras 3",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["tfface", "tfface.*"]) + [
        "tfface_tools", "tfface_configs"],
    package_dir={"tfface_tools": "tools", "tfface_configs": "configs"},
    # The shard writer's per-record loop in C (optional: without a C
    # compiler the same bytes come from its Python path, more slowly).
    ext_modules=[setuptools.Extension("tfface.data.tfrecord._framer",
                                      ["tfface/data/tfrecord/_framer.c"], optional=True)],
    install_requires=_requirements("requirements.txt"),
    extras_require={
        "test": _requirements("requirements-test.txt"),
        "onnx": ["onnx==1.23.2", "onnxruntime==1.32.0", "tf2onnx==1.17.0"],
        "align": ["mtcnn==1.0.0"],
        "serving": ["tensorflow-serving-api==2.21.0"],
        "torch": ["torch==2.13.0"],
    },
    entry_points={
        "console_scripts": [f"tfface-{t}=tfface_tools.{t}:run" for t in TOOLS],
    },
)
