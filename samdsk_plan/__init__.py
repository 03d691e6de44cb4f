"""samdsk-plan: label-efficient 3D medical image segmentation with SamDSK pseudo-labelling."""

__version__ = "0.1.0"
