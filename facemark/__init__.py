"""facemark: facial-landmark regressors from training to int8 models on phones.

The core package holds what every stage shares (schemes, datasets, crop codec, metrics, model
factory, manifest); the stages are the subpackages facemark.train, .convert, .quantize, .validate,
and imports flow only in that direction. The application layer above them, which runs the stages,
is facemark.cli (the verbs) and facemark.pipeline. tests/test_layers.py holds these rules. The
public Python API is `Landmarker` (facemark.landmarker):

    from facemark import Landmarker
    faces = Landmarker("runs/demo/export/model_int8_full.tflite").predict("photo.jpg")
"""

__version__ = "0.1.0"
__all__ = ["Face", "Landmarker", "__version__"]


def __getattr__(name: str):
    # imported on first use: `import facemark` stays light; the CLI and Landmarker import numpy and
    # OpenCV but never torch, timm, TensorFlow or a runtime until a verb or a model needs one
    if name in ("Face", "Landmarker"):
        from facemark import landmarker

        return getattr(landmarker, name)
    raise AttributeError(f"module 'facemark' has no attribute {name!r}")
