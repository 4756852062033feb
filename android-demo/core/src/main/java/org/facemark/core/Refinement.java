package org.facemark.core;

/**
 * Test-time refinement, the manifest's {@code infer} section: the Java side of
 * facemark/runtime/refine.py, applied by {@link LandmarkPipeline#landmarks} and checked against it
 * by the golden vectors.
 *
 * <ul>
 *   <li>flip: the crop's columns reversed (crop pixel x -> S - 1 - x, an exact copy), the model run
 *       on it, its points mirrored back and renumbered by the scheme's flip permutation, then
 *       averaged with the plain crop's points;</li>
 *   <li>passes: pass k + 1 crops the frame again around the tight box of pass k's landmarks (the
 *       landmark-box crop of training, same margin).</li>
 * </ul>
 * Each pass is one model call per face, two with flip.
 */
public final class Refinement {
    public final boolean flip;
    public final int passes;
    private final int[] permutation;   // permutation[i] = index of point i's mirror point

    public Refinement(boolean flip, int passes, int[] permutation) {
        if (passes < 1) {
            throw new IllegalArgumentException("infer.passes must be >= 1, got " + passes);
        }
        boolean[] seen = new boolean[permutation.length];
        for (int index : permutation) {
            if (index < 0 || index >= permutation.length || seen[index]) {
                throw new IllegalArgumentException("infer.flip_permutation must hold every point index once");
            }
            seen[index] = true;
        }
        this.flip = flip;
        this.passes = passes;
        this.permutation = permutation.clone();
    }

    /** The plain single pass of {@code numPoints} points (a manifest without an infer section). */
    public static Refinement single(int numPoints) {
        int[] identity = new int[numPoints];
        for (int i = 0; i < numPoints; i++) {
            identity[i] = i;
        }
        return new Refinement(false, 1, identity);
    }

    /** The same permutation with other settings. */
    public Refinement with(boolean flip, int passes) {
        return new Refinement(flip, passes, permutation);
    }

    public int numPoints() {
        return permutation.length;
    }

    /** Model calls per face: passes x (1 + flip). */
    public int modelCalls() {
        return passes * (flip ? 2 : 1);
    }

    /** A size x size RGB crop with its columns reversed: crop pixel x -> S - 1 - x. */
    public static byte[] mirror(byte[] crop, int size) {
        byte[] out = new byte[crop.length];
        for (int y = 0; y < size; y++) {
            for (int x = 0; x < size; x++) {
                System.arraycopy(crop, (y * size + x) * 3, out, (y * size + size - 1 - x) * 3, 3);
            }
        }
        return out;
    }

    /** (2P) crop-pixel points predicted on the mirrored crop -> the same landmarks in the plain crop. */
    public double[] unmirror(double[] mirroredCropPoints, int size) {
        double[] out = new double[mirroredCropPoints.length];
        for (int i = 0; i < permutation.length; i++) {
            int j = permutation[i];
            out[2 * i] = size - 1 - mirroredCropPoints[2 * j];
            out[2 * i + 1] = mirroredCropPoints[2 * j + 1];
        }
        return out;
    }

    /** The tight box of (2P) points; codec.landmark_box. */
    public static Box landmarkBox(double[] points) {
        double minX = points[0], maxX = points[0], minY = points[1], maxY = points[1];
        for (int i = 2; i + 1 < points.length; i += 2) {
            minX = Math.min(minX, points[i]); maxX = Math.max(maxX, points[i]);
            minY = Math.min(minY, points[i + 1]); maxY = Math.max(maxY, points[i + 1]);
        }
        return new Box(minX, minY, maxX, maxY);
    }

    @Override
    public String toString() {
        String count = passes + (passes == 1 ? " pass" : " passes");
        return flip ? (passes == 1 ? "flip" : "flip + " + count) : count;
    }
}
