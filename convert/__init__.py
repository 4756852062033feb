"""facemark.convert: trained checkpoint -> ONNX, TFLite (onnx2tf) and CoreML, each with a manifest."""
