package org.facemark.core;

/** A face box (x0, y0, x1, y1) in image pixels, x0 <= x1 and y0 <= y1; the pipeline's (4,) box. */
public final class Box {
    public final double x0, y0, x1, y1;

    public Box(double x0, double y0, double x1, double y1) {
        if (!(x1 >= x0 && y1 >= y0)) {
            throw new IllegalArgumentException("box needs x0 <= x1 and y0 <= y1, got "
                    + x0 + ", " + y0 + ", " + x1 + ", " + y1);
        }
        this.x0 = x0; this.y0 = y0; this.x1 = x1; this.y1 = y1;
    }

    public double width() {
        return x1 - x0;
    }

    public double height() {
        return y1 - y0;
    }

    public double area() {
        return width() * height();
    }

    /** Intersection over union with another box; 0 when either is empty (codec.box_iou). */
    public double iou(Box other) {
        double width = Math.min(x1, other.x1) - Math.max(x0, other.x0);
        double height = Math.min(y1, other.y1) - Math.max(y0, other.y0);
        double inter = Math.max(width, 0.0) * Math.max(height, 0.0);
        double union = area() + other.area() - inter;
        return union > 0 ? inter / union : 0.0;
    }

    /** The box mapped through a rotation/flip/scale affine (axis-aligned bounds of its corners). */
    public Box mapped(Affine m) {
        double[] p = m.apply(new double[] {x0, y0, x1, y0, x0, y1, x1, y1});
        double minX = p[0], maxX = p[0], minY = p[1], maxY = p[1];
        for (int i = 2; i < 8; i += 2) {
            minX = Math.min(minX, p[i]); maxX = Math.max(maxX, p[i]);
            minY = Math.min(minY, p[i + 1]); maxY = Math.max(maxY, p[i + 1]);
        }
        return new Box(minX, minY, maxX, maxY);
    }

    @Override
    public String toString() {
        return "Box[" + x0 + ", " + y0 + ", " + x1 + ", " + y1 + "]";
    }
}
