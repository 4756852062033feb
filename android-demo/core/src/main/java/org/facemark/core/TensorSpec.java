package org.facemark.core;

/**
 * How one model tensor is stored, as the interpreter reports it: element type, layout of an image
 * input, and the affine quantisation (real = scale * (q - zeroPoint)) of int8/uint8 tensors.
 */
public final class TensorSpec {
    /** Element types the app feeds and reads. */
    public enum DType { FLOAT32, UINT8, INT8 }

    public final DType dtype;
    public final String layout;       // "NHWC" (TFLite) or "NCHW"; ignored for outputs
    public final float scale;         // 0 when not quantised
    public final int zeroPoint;

    public TensorSpec(DType dtype, String layout, float scale, int zeroPoint) {
        if (!"NHWC".equals(layout) && !"NCHW".equals(layout)) {
            throw new IllegalArgumentException("layout must be NHWC or NCHW, got " + layout);
        }
        this.dtype = dtype; this.layout = layout; this.scale = scale; this.zeroPoint = zeroPoint;
    }

    public static TensorSpec float32(String layout) {
        return new TensorSpec(DType.FLOAT32, layout, 0f, 0);
    }

    /** Bytes per element. */
    public int elementBytes() {
        return dtype == DType.FLOAT32 ? 4 : 1;
    }

    /** A real value -> the stored integer (round half away from zero, as TFLite does), clamped. */
    public int quantize(float real) {
        float x = real / scale;
        int q = (int) (Math.signum(x) * Math.floor(Math.abs(x) + 0.5f)) + zeroPoint;
        return dtype == DType.INT8 ? Math.max(-128, Math.min(127, q)) : Math.max(0, Math.min(255, q));
    }

    /** A stored integer -> its real value. */
    public float dequantize(int stored) {
        return scale * (stored - zeroPoint);
    }
}
