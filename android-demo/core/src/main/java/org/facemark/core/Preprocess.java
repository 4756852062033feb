package org.facemark.core;

import java.nio.ByteBuffer;

/**
 * Crop pixels -> model input, as the manifest's input contract says: RGB, pixels / 255, then
 * (x - mean) / std per channel, in float32 exactly like facemark.data.crops.to_input; or the raw
 * 0..255 pixels for an artifact exported with baked preprocessing.
 */
public final class Preprocess {
    private Preprocess() {
    }

    /** (S*S*3) RGB crop -> (S*S*3) normalised float32 values in NHWC order. */
    public static float[] normalise(byte[] crop, float[] mean, float[] std) {
        float[] out = new float[crop.length];
        for (int i = 0; i < crop.length; i++) {
            int ch = i % 3;
            out[i] = ((crop[i] & 0xFF) / 255.0f - mean[ch]) / std[ch];
        }
        return out;
    }

    /**
     * Write the input tensor of one crop into {@code out} (position 0, the interpreter's byte
     * order), in the tensor's layout and type. Baked artifacts get the pixel values themselves;
     * others the normalised values, quantised when the tensor is int8/uint8.
     */
    public static void fill(byte[] crop, int size, ModelContract contract, boolean baked, TensorSpec spec,
                            ByteBuffer out) {
        if (!baked && spec.dtype != TensorSpec.DType.FLOAT32 && spec.scale == 0f) {
            throw new IllegalArgumentException("an unbaked " + spec.dtype + " input needs quantisation parameters");
        }
        out.rewind();
        boolean nchw = "NCHW".equals(spec.layout);
        float[] values = baked ? null : normalise(crop, contract.mean, contract.std);
        int plane = size * size;
        for (int n = 0; n < plane * 3; n++) {
            // n walks the tensor in its own order; i is the matching NHWC (crop) index
            int i = nchw ? (n % plane) * 3 + n / plane : n;
            int pixel = crop[i] & 0xFF;
            switch (spec.dtype) {
                case FLOAT32:
                    out.putFloat(baked ? pixel : values[i]);
                    break;
                case UINT8:
                case INT8:
                    out.put((byte) (baked ? pixel : spec.quantize(values[i])));
                    break;
                default:
                    throw new IllegalStateException("unhandled type " + spec.dtype);
            }
        }
        out.rewind();
    }
}
