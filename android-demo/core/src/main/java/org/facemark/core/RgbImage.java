package org.facemark.core;

import java.nio.ByteBuffer;

/** An 8-bit RGB image: {@code pixels} holds width * height * 3 bytes, row-major, R G B per pixel. */
public final class RgbImage {
    public final int width, height;
    public final byte[] pixels;

    public RgbImage(int width, int height, byte[] pixels) {
        if (width <= 0 || height <= 0 || pixels.length != width * height * 3) {
            throw new IllegalArgumentException("RGB image " + width + "x" + height + " needs "
                    + (long) width * height * 3 + " bytes, got " + pixels.length);
        }
        this.width = width; this.height = height; this.pixels = pixels;
    }

    /** From packed ARGB ints (android.graphics.Bitmap.getPixels, java.awt getRGB); alpha dropped. */
    public static RgbImage fromArgb(int[] argb, int width, int height) {
        byte[] rgb = new byte[width * height * 3];
        for (int i = 0, o = 0; i < width * height; i++, o += 3) {
            int p = argb[i];
            rgb[o] = (byte) (p >> 16);
            rgb[o + 1] = (byte) (p >> 8);
            rgb[o + 2] = (byte) p;
        }
        return new RgbImage(width, height, rgb);
    }

    /**
     * From an RGBA plane with strides (CameraX ImageAnalysis OUTPUT_IMAGE_FORMAT_RGBA_8888:
     * planes[0] with its rowStride and pixelStride 4); alpha dropped.
     */
    public static RgbImage fromRgba(ByteBuffer plane, int width, int height, int rowStride, int pixelStride) {
        byte[] rgb = new byte[width * height * 3];
        byte[] row = new byte[rowStride];
        ByteBuffer src = plane.duplicate();
        for (int y = 0; y < height; y++) {
            src.position(y * rowStride);
            int length = Math.min(rowStride, src.remaining());
            src.get(row, 0, length);
            for (int x = 0, o = y * width * 3; x < width; x++, o += 3) {
                int i = x * pixelStride;
                rgb[o] = row[i];
                rgb[o + 1] = row[i + 1];
                rgb[o + 2] = row[i + 2];
            }
        }
        return new RgbImage(width, height, rgb);
    }

    /** Channel value 0..255 of pixel (x, y); channel 0 = R. */
    public int at(int x, int y, int channel) {
        return pixels[(y * width + x) * 3 + channel] & 0xFF;
    }
}
