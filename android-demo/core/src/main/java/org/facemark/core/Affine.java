package org.facemark.core;

/**
 * A 2x3 affine map (x, y) -> (a*x + b*y + c, d*x + e*y + f), the same row-major layout as the
 * pipeline's numpy matrices and cv2.warpAffine.
 *
 * <p>Coordinate convention (facemark/codec.py): pixel centres sit at integer coordinates. The crop
 * of a face box is the square of side max(w, h) * (1 + margin) centred on the box, and
 * {@link #cropFromBox} maps image pixels to the pixels of the S x S crop:
 * crop = scale * (image - centre) + S/2 with scale = S / side.
 */
public final class Affine {
    public final double a, b, c, d, e, f;

    public Affine(double a, double b, double c, double d, double e, double f) {
        this.a = a; this.b = b; this.c = c; this.d = d; this.e = e; this.f = f;
    }

    public static Affine identity() {
        return new Affine(1, 0, 0, 0, 1, 0);
    }

    /** Row-major (a, b, c, d, e, f), as numpy's matrix.ravel(). */
    public static Affine of(double[] rowMajor) {
        if (rowMajor.length != 6) {
            throw new IllegalArgumentException("an affine needs 6 values, got " + rowMajor.length);
        }
        return new Affine(rowMajor[0], rowMajor[1], rowMajor[2], rowMajor[3], rowMajor[4], rowMajor[5]);
    }

    /** Image pixels -> pixels of the size x size crop of {@code box}; codec.crop_matrix. */
    public static Affine cropFromBox(Box box, int size, double margin) {
        double side = Math.max(Math.max(box.width(), box.height()), 1.0) * (1.0 + margin);
        double cx = (box.x0 + box.x1) / 2.0;
        double cy = (box.y0 + box.y1) / 2.0;
        double scale = size / side;
        return new Affine(scale, 0.0, size / 2.0 - scale * cx, 0.0, scale, size / 2.0 - scale * cy);
    }

    /**
     * Sensor-oriented pixels of a {@code width} x {@code height} frame -> upright pixels, for a
     * frame that must be rotated clockwise by {@code degrees} (CameraX ImageInfo.getRotationDegrees)
     * to be upright. Pixel centres stay at integers: the upright frame is height x width for 90/270.
     */
    public static Affine uprightFromSensor(int degrees, int width, int height) {
        switch (((degrees % 360) + 360) % 360) {
            case 0: return identity();
            case 90: return new Affine(0, -1, height - 1, 1, 0, 0);
            case 180: return new Affine(-1, 0, width - 1, 0, -1, height - 1);
            case 270: return new Affine(0, 1, 0, -1, 0, width - 1);
            default: throw new IllegalArgumentException("rotation must be a multiple of 90, got " + degrees);
        }
    }

    /**
     * Upright image pixels -> view pixels of a preview that shows the whole frame scaled to fill a
     * viewWidth x viewHeight view and centred (PreviewView.ScaleType.FILL_CENTER), mirrored
     * horizontally when {@code mirror} (the front camera preview is a mirror image).
     *
     * <p>Pixel edges, not centres, are aligned: image pixel centre x maps to (x + 0.5) * s - 0.5 + dx.
     */
    public static Affine viewFromImage(int imageWidth, int imageHeight, int viewWidth, int viewHeight,
                                       boolean mirror) {
        double s = Math.max(viewWidth / (double) imageWidth, viewHeight / (double) imageHeight);
        double dx = (viewWidth - imageWidth * s) / 2.0 + 0.5 * s - 0.5;
        double dy = (viewHeight - imageHeight * s) / 2.0 + 0.5 * s - 0.5;
        Affine fill = new Affine(s, 0, dx, 0, s, dy);
        return mirror ? fill.then(new Affine(-1, 0, viewWidth - 1, 0, 1, 0)) : fill;
    }

    /** The map that applies this one, then {@code next}: next(this(p)). */
    public Affine then(Affine next) {
        return new Affine(
                next.a * a + next.b * d, next.a * b + next.b * e, next.a * c + next.b * f + next.c,
                next.d * a + next.e * d, next.d * b + next.e * e, next.d * c + next.e * f + next.f);
    }

    /** The inverse map; codec.invert_affine. */
    public Affine inverse() {
        double det = a * e - b * d;
        if (det == 0.0) {
            throw new IllegalStateException("affine is not invertible: " + this);
        }
        double ia = e / det, ib = -b / det, id = -d / det, ie = a / det;
        return new Affine(ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f));
    }

    /** (N*2) interleaved x, y points -> a new array of mapped points. */
    public double[] apply(double[] xy) {
        double[] out = new double[xy.length];
        for (int i = 0; i + 1 < xy.length; i += 2) {
            out[i] = a * xy[i] + b * xy[i + 1] + c;
            out[i + 1] = d * xy[i] + e * xy[i + 1] + f;
        }
        return out;
    }

    public double[] toArray() {
        return new double[] {a, b, c, d, e, f};
    }

    @Override
    public String toString() {
        return "Affine[" + a + ", " + b + ", " + c + "; " + d + ", " + e + ", " + f + "]";
    }
}
