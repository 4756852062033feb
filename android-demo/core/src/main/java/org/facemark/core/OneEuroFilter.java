package org.facemark.core;

/**
 * The One Euro filter (Casiez, Roussel, Vogel, CHI 2012) on every coordinate of one face's 2P
 * landmarks: the Java side of facemark/filters.py, the same arithmetic in doubles, checked against
 * it on a recorded sequence (TrackingCheck). The cutoff of each coordinate is
 * minCutoff + beta * |speed| / scale, the speed low-passed at dCutoff and measured in face sizes
 * per second (scale: the face's size in pixels), so one beta fits near and far faces.
 */
public final class OneEuroFilter {
    private final double minCutoff, beta, dCutoff;
    private double[] points;   // last output, 2P
    private double[] speed;    // low-passed speed, pixels per second
    private double time;

    public OneEuroFilter(double minCutoff, double beta, double dCutoff) {
        if (!(minCutoff > 0) || !(beta >= 0) || !(dCutoff > 0)) {
            throw new IllegalArgumentException("One Euro needs minCutoff > 0, beta >= 0, dCutoff > 0");
        }
        this.minCutoff = minCutoff; this.beta = beta; this.dCutoff = dCutoff;
    }

    /** The smoothing factor of a first-order low-pass at cutoffHz sampled every dtS seconds. */
    public static double smoothingFactor(double cutoffHz, double dtS) {
        double tau = 1.0 / (2.0 * Math.PI * cutoffHz);
        return 1.0 / (1.0 + tau / dtS);
    }

    /** Forget the past: the next call starts a new trajectory. */
    public void reset() {
        points = null;
        speed = null;
    }

    /** 2P image-pixel points at timeS of a face scale pixels large -> the filtered 2P points (a copy). */
    public double[] filter(double[] raw, double timeS, double scale) {
        if (points == null) {
            points = raw.clone();
            speed = new double[raw.length];
            time = timeS;
            return raw.clone();
        }
        double dt = timeS - time;
        if (!(dt > 0)) {
            throw new IllegalArgumentException("frame times must increase: " + timeS + " after " + time);
        }
        double speedAlpha = smoothingFactor(dCutoff, dt);
        double size = Math.max(scale, 1.0);
        for (int i = 0; i < raw.length; i++) {
            speed[i] += speedAlpha * ((raw[i] - points[i]) / dt - speed[i]);
            double cutoff = minCutoff + beta * Math.abs(speed[i]) / size;
            points[i] += smoothingFactor(cutoff, dt) * (raw[i] - points[i]);
        }
        time = timeS;
        return points.clone();
    }
}
