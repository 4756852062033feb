"""facemark.quantize: int8 artifacts for each format, calibrated on real training crops."""
