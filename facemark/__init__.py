"""facemark: facial-landmark regressors from training to int8 models on phones.

The core package holds what every stage shares (schemes, datasets, crop codec, metrics, model
factory, manifest); the stages are the subpackages facemark.train, .convert, .quantize, .validate,
and imports flow only in that direction.
"""

__version__ = "0.1.0"
