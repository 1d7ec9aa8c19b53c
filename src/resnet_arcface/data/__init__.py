"""Faces and how they become the network's input: GFPGAN's preprocessing, sample faces, synthetic identities and
real faces (:func:`olivetti_faces`), training augmentations (:mod:`.augment`) and folders of photographs (streamed by
:class:`FaceFolder`, or decoded once into the packed format of :class:`PackedFaces`)."""
from .folders import FaceFolder, LabelledSubset, load_face, read_image_folder, write_image_folder
from .olivetti import olivetti_faces
from .packed import PackedFaces, open_faces, pack_faces
from .samples import astronaut_face, lfw_faces
from .synthetic import synthetic_faces
from .transforms import LUMA, preprocess, to_gray

__all__ = ["preprocess", "to_gray", "LUMA", "astronaut_face", "lfw_faces", "synthetic_faces", "read_image_folder",
           "write_image_folder", "FaceFolder", "LabelledSubset", "load_face", "PackedFaces", "open_faces", "pack_faces",
           "olivetti_faces"]
