package org.facemark.core;

import java.util.List;

/**
 * One camera frame through the model contract, the model given as a function: pick the face, crop
 * it from the sensor-oriented frame, run and refine (the manifest's infer section, {@link Refinement}),
 * and map the landmarks back to the upright frame and the view.
 *
 * <p>Spaces: sensor pixels (the frame as delivered) -> upright pixels (rotated by the frame's
 * rotation; face boxes from the detector live here) -> crop pixels (S x S) -> normalised outputs.
 * The crop is sampled from the sensor frame in one step through the composed affine, so a
 * rotated frame is never copied.
 */
public final class LandmarkPipeline {
    private final ModelContract contract;
    private final Refinement refinement;

    /** The model: one S*S*3 RGB crop -> its 2P outputs (normalised crop units, or crop pixels when baked). */
    public interface Model {
        float[] run(byte[] crop);
    }

    /** A crop of one face and the map that made it. */
    public static final class Crop {
        public final byte[] pixels;          // S*S*3 RGB
        public final Affine uprightToCrop;   // upright frame pixels -> crop pixels

        Crop(byte[] pixels, Affine uprightToCrop) {
            this.pixels = pixels; this.uprightToCrop = uprightToCrop;
        }
    }

    /** The pipeline of the manifest, refined as its {@code infer} section says. */
    public LandmarkPipeline(ModelContract contract) {
        this(contract, contract.refinement);
    }

    public LandmarkPipeline(ModelContract contract, Refinement refinement) {
        if (refinement.numPoints() != contract.numPoints) {
            throw new IllegalArgumentException("refinement for " + refinement.numPoints()
                    + " points; the manifest says " + contract.numPoints);
        }
        this.contract = contract;
        this.refinement = refinement;
    }

    /**
     * The face to track among the detector's upright boxes: the largest, or null when there is none.
     * (The pipeline's detectors also keep large faces; ML Kit gives no score to break ties.)
     */
    public static Box chooseFace(List<Box> boxes) {
        Box best = null;
        for (Box box : boxes) {
            if (best == null || box.area() > best.area()) {
                best = box;
            }
        }
        return best;
    }

    /** Crop the face of {@code uprightBox} from a sensor-oriented frame of the given rotation. */
    public Crop crop(RgbImage sensorFrame, int rotationDegrees, Box uprightBox) {
        Affine uprightToCrop = Affine.cropFromBox(uprightBox, contract.inputSize, contract.margin);
        Affine sensorToUpright = Affine.uprightFromSensor(rotationDegrees, sensorFrame.width, sensorFrame.height);
        byte[] pixels = CropSampler.warp(sensorFrame, sensorToUpright.then(uprightToCrop), contract.inputSize);
        return new Crop(pixels, uprightToCrop);
    }

    /**
     * Landmarks of the face in {@code uprightBox}, in upright frame pixels (2P): crop, run the model
     * (and on the mirrored crop with flip), then each later pass crops the landmark box of the
     * previous pass's landmarks (facemark/runtime/refine.py). {@code cropPixelOutputs} for baked artifacts.
     */
    public double[] landmarks(RgbImage sensorFrame, int rotationDegrees, Box uprightBox, Model model,
                              boolean cropPixelOutputs) {
        Crop crop = crop(sensorFrame, rotationDegrees, uprightBox);
        double[] points = crop.uprightToCrop.inverse().apply(cropPoints(crop.pixels, model, cropPixelOutputs));
        for (int pass = 1; pass < refinement.passes; pass++) {
            crop = crop(sensorFrame, rotationDegrees, Refinement.landmarkBox(points));
            points = crop.uprightToCrop.inverse().apply(cropPoints(crop.pixels, model, cropPixelOutputs));
        }
        return points;
    }

    /** One pass on one crop -> crop pixels (2P): the model's points, averaged with the mirrored crop's. */
    private double[] cropPoints(byte[] pixels, Model model, boolean cropPixelOutputs) {
        int s = contract.inputSize;
        double[] plain = Postprocess.toCropPoints(checked(model.run(pixels)), s, cropPixelOutputs);
        if (!refinement.flip) {
            return plain;
        }
        double[] mirrored = refinement.unmirror(
                Postprocess.toCropPoints(checked(model.run(Refinement.mirror(pixels, s))), s, cropPixelOutputs), s);
        double[] out = new double[plain.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = (plain[i] + mirrored[i]) / 2.0;
        }
        return out;
    }

    private float[] checked(float[] outputs) {
        if (outputs.length != 2 * contract.numPoints) {
            throw new IllegalArgumentException("model gave " + outputs.length + " values; the manifest says "
                    + 2 * contract.numPoints + " (2 x " + contract.numPoints + " points)");
        }
        return outputs;
    }

    /** Upright frame pixels -> view pixels of a FILL_CENTER preview, mirrored for the front camera. */
    public static double[] toView(double[] uprightPoints, int uprightWidth, int uprightHeight,
                                  int viewWidth, int viewHeight, boolean mirror) {
        return Affine.viewFromImage(uprightWidth, uprightHeight, viewWidth, viewHeight, mirror).apply(uprightPoints);
    }
}
