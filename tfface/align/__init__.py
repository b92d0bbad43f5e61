"""Face alignment: 5-point similarity transform, MTCNN detection, folder alignment."""
from tfface.align.detector import AlignedFace
from tfface.align.detector import Face
from tfface.align.detector import FaceAligner
from tfface.align.detector import FaceDetector
from tfface.align.folder import align_folder
from tfface.align.transform import ARCFACE_DST
from tfface.align.transform import estimate_norm
from tfface.align.transform import warp_face

__all__ = ["ARCFACE_DST", "estimate_norm", "warp_face", "Face", "FaceDetector",
           "FaceAligner", "AlignedFace", "align_folder"]
