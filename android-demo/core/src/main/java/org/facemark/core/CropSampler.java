package org.facemark.core;

/**
 * Bilinear resampling of an RGB image into an S x S crop through an image->crop affine, with
 * black outside the image: the pipeline's codec.warp_crop, i.e. cv2.warpAffine(image, M, (S, S),
 * INTER_LINEAR, BORDER_CONSTANT, 0).
 *
 * <p>It reproduces OpenCV's fixed-point arithmetic rather than exact bilinear weights: OpenCV
 * inverts M in doubles, rounds each source position to 1/32 pixel (INTER_BITS = 5, via 10-bit
 * intermediate sums) and blends with 15-bit integer weights. Plain double-precision bilinear
 * weights differ from cv2 by up to 5 grey levels on noisy images; this version matches cv2 4.x
 * bit for bit in the golden checks (tolerance documented in android-demo/README.md: at most 1
 * grey level, for OpenCV builds that round differently).
 */
public final class CropSampler {
    private static final int INTER_BITS = 5;
    private static final int INTER_TAB_SIZE = 1 << INTER_BITS;
    private static final int AB_BITS = 10;
    private static final int AB_SCALE = 1 << AB_BITS;
    private static final int ROUND_DELTA = AB_SCALE / INTER_TAB_SIZE / 2;
    private static final int COEF_BITS = 15;

    private CropSampler() {
    }

    /** Crop of {@code size} x {@code size} RGB bytes; {@code imageToCrop} maps image to crop pixels. */
    public static byte[] warp(RgbImage image, Affine imageToCrop, int size) {
        double[] m = cropToImage(imageToCrop);
        int[] adelta = new int[size];
        int[] bdelta = new int[size];
        for (int x = 0; x < size; x++) {
            adelta[x] = round(m[0] * x * AB_SCALE);
            bdelta[x] = round(m[3] * x * AB_SCALE);
        }
        byte[] out = new byte[size * size * 3];
        for (int y = 0; y < size; y++) {
            int x0 = round((m[1] * y + m[2]) * AB_SCALE) + ROUND_DELTA;
            int y0 = round((m[4] * y + m[5]) * AB_SCALE) + ROUND_DELTA;
            for (int x = 0; x < size; x++) {
                int sx = (x0 + adelta[x]) >> (AB_BITS - INTER_BITS);
                int sy = (y0 + bdelta[x]) >> (AB_BITS - INTER_BITS);
                sample(image, sx, sy, out, (y * size + x) * 3);
            }
        }
        return out;
    }

    /** OpenCV's own inversion of M (warpAffine without WARP_INVERSE_MAP), in its operation order. */
    private static double[] cropToImage(Affine imageToCrop) {
        double[] m = imageToCrop.toArray();
        double det = m[0] * m[4] - m[1] * m[3];
        det = det != 0.0 ? 1.0 / det : 0.0;
        double a11 = m[4] * det, a22 = m[0] * det;
        m[0] = a11;
        m[1] *= -det;
        m[3] *= -det;
        m[4] = a22;
        double b1 = -m[0] * m[2] - m[1] * m[5];
        double b2 = -m[3] * m[2] - m[4] * m[5];
        m[2] = b1;
        m[5] = b2;
        return m;
    }

    /** Blend the 2x2 neighbourhood of fixed-point position (sx, sy) / 32 into out[o..o+2]. */
    private static void sample(RgbImage image, int sx, int sy, byte[] out, int o) {
        int ix = sx >> INTER_BITS, iy = sy >> INTER_BITS;
        int fx = sx & (INTER_TAB_SIZE - 1), fy = sy & (INTER_TAB_SIZE - 1);
        if (ix >= image.width || ix + 1 < 0 || iy >= image.height || iy + 1 < 0) {
            return;  // every tap outside: the border value 0, already in `out`
        }
        // (1 - t) and t in 1/32 steps; their products * 2^15 are exact integers summing to 2^15
        int w00 = (INTER_TAB_SIZE - fx) * (INTER_TAB_SIZE - fy) * 32;
        int w01 = fx * (INTER_TAB_SIZE - fy) * 32;
        int w10 = (INTER_TAB_SIZE - fx) * fy * 32;
        int w11 = fx * fy * 32;
        byte[] px = image.pixels;
        int width = image.width;
        boolean left = ix >= 0, right = ix + 1 < width, top = iy >= 0, bottom = iy + 1 < image.height;
        int row0 = iy * width, row1 = (iy + 1) * width;
        for (int ch = 0; ch < 3; ch++) {
            int acc = 0;
            if (top && left) acc += w00 * (px[(row0 + ix) * 3 + ch] & 0xFF);
            if (top && right) acc += w01 * (px[(row0 + ix + 1) * 3 + ch] & 0xFF);
            if (bottom && left) acc += w10 * (px[(row1 + ix) * 3 + ch] & 0xFF);
            if (bottom && right) acc += w11 * (px[(row1 + ix + 1) * 3 + ch] & 0xFF);
            int value = (acc + (1 << (COEF_BITS - 1))) >> COEF_BITS;
            out[o + ch] = (byte) Math.min(255, value);
        }
    }

    /** cvRound/saturate_cast<int>: round half to even, clamped to the int range. */
    private static int round(double v) {
        double r = Math.rint(v);
        if (r >= Integer.MAX_VALUE) return Integer.MAX_VALUE;
        if (r <= Integer.MIN_VALUE) return Integer.MIN_VALUE;
        return (int) r;
    }
}
