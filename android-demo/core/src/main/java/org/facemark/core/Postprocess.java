package org.facemark.core;

import java.nio.ByteBuffer;

/**
 * Model output -> points: 2P values x0, y0, x1, y1, ... in normalised crop units
 * (P - S/2) / (S/2) (crop pixels for baked artifacts) -> crop pixels -> image pixels through the
 * inverse of the image->crop affine (codec.to_image) -> view pixels.
 */
public final class Postprocess {
    private Postprocess() {
    }

    /** Read {@code count} output values, dequantising int8/uint8 tensors. */
    public static float[] read(ByteBuffer buffer, TensorSpec spec, int count) {
        buffer.rewind();
        float[] out = new float[count];
        for (int i = 0; i < count; i++) {
            switch (spec.dtype) {
                case FLOAT32: out[i] = buffer.getFloat(); break;
                case UINT8: out[i] = spec.dequantize(buffer.get() & 0xFF); break;
                case INT8: out[i] = spec.dequantize(buffer.get()); break;
                default: throw new IllegalStateException("unhandled type " + spec.dtype);
            }
        }
        return out;
    }

    /** Normalised outputs -> crop pixels: P * S/2 + S/2 (codec.denormalise), in doubles. */
    public static double[] toCropPixels(float[] outputs, int size) {
        double half = size / 2.0;
        double[] out = new double[outputs.length];
        for (int i = 0; i < outputs.length; i++) {
            out[i] = (double) outputs[i] * half + half;
        }
        return out;
    }

    /** Outputs -> crop pixels; {@code cropPixelOutputs} for baked artifacts (already crop pixels). */
    public static double[] toCropPoints(float[] outputs, int size, boolean cropPixelOutputs) {
        if (!cropPixelOutputs) {
            return toCropPixels(outputs, size);
        }
        double[] crop = new double[outputs.length];
        for (int i = 0; i < outputs.length; i++) {
            crop[i] = outputs[i];
        }
        return crop;
    }

    /** Outputs -> image pixels; {@code cropPixelOutputs} for baked artifacts. */
    public static double[] toImage(float[] outputs, Affine imageToCrop, int size, boolean cropPixelOutputs) {
        return imageToCrop.inverse().apply(toCropPoints(outputs, size, cropPixelOutputs));
    }

    /** (2P) points -> (4) x, y of the two pupils: the mean of each index group of the scheme. */
    public static double[] pupilCentres(double[] points, int[][] groups) {
        double[] out = new double[4];
        for (int g = 0; g < 2; g++) {
            for (int index : groups[g]) {
                out[2 * g] += points[2 * index];
                out[2 * g + 1] += points[2 * index + 1];
            }
            out[2 * g] /= groups[g].length;
            out[2 * g + 1] /= groups[g].length;
        }
        return out;
    }
}
