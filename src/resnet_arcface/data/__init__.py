"""Faces and how they become the network's input: GFPGAN's preprocessing, sample faces, synthetic identities,
folders of photographs, real faces (Olivetti) and training augmentations."""
from .folders import read_image_folder
from .olivetti import olivetti_faces
from .samples import astronaut_face, lfw_faces
from .synthetic import synthetic_faces
from .transforms import LUMA, preprocess, to_gray

__all__ = ["preprocess", "to_gray", "LUMA", "astronaut_face", "lfw_faces", "synthetic_faces", "read_image_folder",
           "olivetti_faces"]
