package org.facemark.core;

import java.util.List;

/**
 * One camera frame through the model contract, without the model: pick the face, crop it from
 * the sensor-oriented frame, and map the model's outputs back to the upright frame and the view.
 *
 * <p>Spaces: sensor pixels (the frame as delivered) -> upright pixels (rotated by the frame's
 * rotation; face boxes from the detector live here) -> crop pixels (S x S) -> normalised outputs.
 * The crop is sampled from the sensor frame in one step through the composed affine, so a
 * rotated frame is never copied.
 */
public final class LandmarkPipeline {
    private final ModelContract contract;

    /** A crop of one face and the map that made it. */
    public static final class Crop {
        public final byte[] pixels;          // S*S*3 RGB
        public final Affine uprightToCrop;   // upright frame pixels -> crop pixels

        Crop(byte[] pixels, Affine uprightToCrop) {
            this.pixels = pixels; this.uprightToCrop = uprightToCrop;
        }
    }

    public LandmarkPipeline(ModelContract contract) {
        this.contract = contract;
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

    /** Model outputs (2P) -> upright frame pixels (2P). */
    public double[] toUpright(float[] outputs, Crop crop, boolean cropPixelOutputs) {
        if (outputs.length != 2 * contract.numPoints) {
            throw new IllegalArgumentException("model gave " + outputs.length + " values; the manifest says "
                    + 2 * contract.numPoints + " (2 x " + contract.numPoints + " points)");
        }
        return Postprocess.toImage(outputs, crop.uprightToCrop, contract.inputSize, cropPixelOutputs);
    }

    /** Upright frame pixels -> view pixels of a FILL_CENTER preview, mirrored for the front camera. */
    public static double[] toView(double[] uprightPoints, int uprightWidth, int uprightHeight,
                                  int viewWidth, int viewHeight, boolean mirror) {
        return Affine.viewFromImage(uprightWidth, uprightHeight, viewWidth, viewHeight, mirror).apply(uprightPoints);
    }
}
