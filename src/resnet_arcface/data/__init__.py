"""Faces and how they become the network's input: GFPGAN's preprocessing, sample faces, synthetic identities and
folders of photographs."""
from .folders import read_image_folder
from .samples import astronaut_face, lfw_faces
from .synthetic import synthetic_faces
from .transforms import LUMA, preprocess, to_gray

__all__ = ["preprocess", "to_gray", "LUMA", "astronaut_face", "lfw_faces", "synthetic_faces", "read_image_folder"]
