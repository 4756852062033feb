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
