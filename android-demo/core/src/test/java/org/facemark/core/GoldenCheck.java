package org.facemark.core;

import java.awt.image.BufferedImage;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import javax.imageio.ImageIO;

/**
 * Checks :core against golden vectors written by convert/golden.py (facemark export --golden),
 * the test-time refinement (flip, a second pass on the landmark box) included:
 *
 * <pre>java -cp CLASSES org.facemark.core.GoldenCheck RUN/export/golden</pre>
 *
 * Exit 0 when every case agrees, 1 on a disagreement (each one printed), 2 when the folder is
 * missing or malformed. Also runs {@link CoreSelfTest}. Tolerances (see android-demo/README.md):
 */
public final class GoldenCheck {
    static final int CROP_MAX_DIFF = 1;                 // grey levels, per value
    static final double CROP_DIFF_FRACTION = 0.01;      // of values allowed to differ at all
    static final double CONTRACT_TOL = 1e-12;
    static final double MATRIX_TOL = 1e-9;              // relative to the entry's magnitude
    static final double TENSOR_TOL = 1e-6;              // normalised units, same crop on both sides
    static final double OWN_CROP_STATS_TOL = 0.02;      // normalised units: ~1 grey level / std
    static final double POINT_TOL = 1e-6;               // pixels

    private final List<String> failures = new ArrayList<>();

    public static void main(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: GoldenCheck GOLDEN_DIR");
            System.exit(2);
        }
        GoldenCheck check = new GoldenCheck();
        try {
            check.run(Paths.get(args[0]));
        } catch (IOException | IllegalArgumentException | IndexOutOfBoundsException exc) {
            System.err.println("golden check: error: " + exc.getMessage());
            System.exit(2);
        }
        check.failures.addAll(CoreSelfTest.run());
        for (String failure : check.failures) {
            System.out.println("FAIL " + failure);
        }
        System.out.println(check.failures.isEmpty() ? "golden check: OK" : "golden check: "
                + check.failures.size() + " disagreement(s)");
        System.exit(check.failures.isEmpty() ? 0 : 1);
    }

    private void run(Path folder) throws IOException {
        Map<String, String[]> index = readKeyValues(folder.resolve("golden.txt"));
        if (!"facemark-golden-v2".equals(one(index, "format"))) {
            throw new IllegalArgumentException(folder.resolve("golden.txt") + ": not facemark-golden-v2 (re-run "
                    + "facemark export RUN --golden)");
        }
        ModelContract contract = contractOf(folder.getParent().resolve(AppDefaults.MANIFEST_ASSET), index);
        for (String name : index.get("cases")) {
            checkCase(folder, name, contract, index);
        }
    }

    /** The manifest beside the golden folder, checked against the index; else the index alone. */
    private ModelContract contractOf(Path manifest, Map<String, String[]> index) throws IOException {
        String json;
        if (Files.isRegularFile(manifest)) {
            json = new String(Files.readAllBytes(manifest), StandardCharsets.UTF_8);
        } else {
            System.out.println("note: no " + manifest + "; using the golden index's contract");
            json = "{\"schema\": \"facemark-manifest-v1\", \"input\": {\"size\": " + one(index, "input_size")
                    + ", \"mean\": [" + String.join(",", index.get("mean")) + "], \"std\": ["
                    + String.join(",", index.get("std")) + "]}, \"scheme\": {\"name\": \"" + one(index, "scheme")
                    + "\", \"num_points\": " + one(index, "num_points") + ", \"pupils\": [["
                    + String.join(",", index.get("pupils_left")) + "], [" + String.join(",", index.get("pupils_right"))
                    + "]]}, \"crop\": {\"margin\": " + one(index, "margin") + "}, \"infer\": {\"flip\": "
                    + one(index, "infer_flip") + ", \"passes\": " + one(index, "infer_passes")
                    + ", \"flip_permutation\": [" + String.join(",", index.get("flip_permutation")) + "]}, "
                    + "\"artifacts\": {}}";
        }
        ModelContract c = ModelContract.fromManifestJson(json);
        expectNear("contract input_size", c.inputSize, Integer.parseInt(one(index, "input_size")), 0);
        expectNear("contract margin", c.margin, Double.parseDouble(one(index, "margin")), CONTRACT_TOL);
        expectArray("contract mean", toDoubles(c.mean), doubles(index, "mean"), 1e-7);
        expectArray("contract std", toDoubles(c.std), doubles(index, "std"), 1e-7);
        expectNear("contract num_points", c.numPoints, Integer.parseInt(one(index, "num_points")), 0);
        expectArray("contract pupils_left", toDoubles(c.pupils[0]), doubles(index, "pupils_left"), 0);
        expectArray("contract pupils_right", toDoubles(c.pupils[1]), doubles(index, "pupils_right"), 0);
        expectNear("contract infer_flip", c.refinement.flip ? 1 : 0, Boolean.parseBoolean(one(index, "infer_flip"))
                ? 1 : 0, 0);
        expectNear("contract infer_passes", c.refinement.passes, Integer.parseInt(one(index, "infer_passes")), 0);
        return c;
    }

    private void checkCase(Path folder, String name, ModelContract contract, Map<String, String[]> index)
            throws IOException {
        Map<String, String[]> kv = readKeyValues(folder.resolve(name + ".txt"));
        RgbImage frame = readPng(folder.resolve(one(kv, "image")).toFile());
        double[] size = doubles(kv, "image_size");
        expectNear(name + " image width", frame.width, size[0], 0);
        expectNear(name + " image height", frame.height, size[1], 0);
        long sum = 0;
        for (byte b : frame.pixels) {
            sum += b & 0xFF;
        }
        expectNear(name + " image_sum (PNG decode)", sum, Long.parseLong(one(kv, "image_sum")), 0);

        double[] b = doubles(kv, "box");
        int s = contract.inputSize;
        Affine matrix = Affine.cropFromBox(new Box(b[0], b[1], b[2], b[3]), s, contract.margin);
        double[] expectedMatrix = doubles(kv, "matrix");
        for (int i = 0; i < 6; i++) {
            double tol = MATRIX_TOL * Math.max(1.0, Math.abs(expectedMatrix[i]));
            expectNear(name + " matrix[" + i + "]", matrix.toArray()[i], expectedMatrix[i], tol);
        }

        byte[] expectedCrop = Files.readAllBytes(folder.resolve(one(kv, "crop")));
        byte[] crop = CropSampler.warp(frame, matrix, s);
        compareCrops(name, crop, expectedCrop, s);
        checkInput(name, expectedCrop, crop, contract, kv);

        float[] outputs = floats(kv, "outputs");
        expectArray(name + " crop_points", Postprocess.toCropPixels(outputs, s), doubles(kv, "crop_points"), POINT_TOL);
        double[] landmarks = Postprocess.toImage(outputs, matrix, s, false);
        expectArray(name + " landmarks", landmarks, doubles(kv, "landmarks"), POINT_TOL);
        expectArray(name + " pupils", Postprocess.pupilCentres(landmarks, contract.pupils), doubles(kv, "pupils"),
                POINT_TOL);
        // a baked artifact returns crop pixels: the same landmarks through the other branch
        float[] cropPixels = new float[outputs.length];
        double[] cropPoints = Postprocess.toCropPixels(outputs, s);
        for (int i = 0; i < outputs.length; i++) {
            cropPixels[i] = (float) cropPoints[i];
        }
        expectArray(name + " landmarks (baked outputs)", Postprocess.toImage(cropPixels, matrix, s, true),
                doubles(kv, "landmarks"), 1e-4 * s);
        Refinement recorded = contract.refinement.with(Boolean.parseBoolean(one(index, "refine_flip")),
                Integer.parseInt(one(index, "refine_passes")));
        checkRefinement(folder, name, frame, new Box(b[0], b[1], b[2], b[3]), contract, recorded, kv, expectedCrop);
    }

    /**
     * The recorded refinement sequence (golden.txt refine_flip / refine_passes: flip, then a second
     * pass on the landmark box) through
     * LandmarkPipeline.landmarks as the app runs it, the model answered by the recorded PyTorch
     * outputs of the expected crop nearest to each crop the core asks about: the single pass, flip,
     * and flip + 2 passes must give PyTorch's landmarks, and every crop the core cut must match.
     */
    private void checkRefinement(Path folder, String name, RgbImage frame, Box box, ModelContract contract,
                                 Refinement recorded, Map<String, String[]> kv, byte[] crop) throws IOException {
        int s = contract.inputSize;
        byte[] mirrorCrop = Files.readAllBytes(folder.resolve(one(kv, "mirror_crop")));
        if (!Arrays.equals(Refinement.mirror(crop, s), mirrorCrop)) {
            failures.add(name + " mirror crop: not the crop's columns reversed");
        }
        RecordedModel model = new RecordedModel();
        model.add(crop, floats(kv, "outputs"));
        model.add(mirrorCrop, floats(kv, "mirror_outputs"));
        model.add(Files.readAllBytes(folder.resolve(one(kv, "pass2_crop"))), floats(kv, "pass2_outputs"));
        model.add(Files.readAllBytes(folder.resolve(one(kv, "pass2_mirror_crop"))), floats(kv, "pass2_mirror_outputs"));
        Box pass2 = Refinement.landmarkBox(doubles(kv, "flip_landmarks"));
        expectArray(name + " pass2_box", new double[] {pass2.x0, pass2.y0, pass2.x1, pass2.y1},
                doubles(kv, "pass2_box"), POINT_TOL);
        double[] matrix = Affine.cropFromBox(pass2, s, contract.margin).toArray();
        double[] expected = doubles(kv, "pass2_matrix");
        for (int i = 0; i < 6; i++) {
            expectNear(name + " pass2_matrix[" + i + "]", matrix[i], expected[i], MATRIX_TOL * Math.max(1.0,
                    Math.abs(expected[i])));
        }
        String[] keys = {"landmarks", "flip_landmarks", "refined_landmarks"};
        Refinement[] settings = {recorded.with(false, 1), recorded.with(true, 1), recorded};
        for (int k = 0; k < keys.length; k++) {
            model.calls = 0;
            double[] points = new LandmarkPipeline(contract, settings[k]).landmarks(frame, 0, box, model, false);
            expectArray(name + " " + keys[k] + " (" + settings[k] + ")", points, doubles(kv, keys[k]), POINT_TOL);
            expectNear(name + " model calls (" + settings[k] + ")", model.calls, settings[k].modelCalls(), 0);
        }
        System.out.printf(Locale.ROOT, "%s: refinement crops max diff %d, %d of %d values differ%n", name,
                model.worstDiff, model.worstDiffering, crop.length);
        if (model.worstDiff > CROP_MAX_DIFF || model.worstDiffering / (double) crop.length > CROP_DIFF_FRACTION) {
            failures.add(String.format(Locale.ROOT, "%s refinement crop: max diff %d grey levels, %d of %d values "
                    + "differ from the nearest expected crop", name, model.worstDiff, model.worstDiffering,
                    crop.length));
        }
    }

    /** A model that answers with the recorded outputs of the expected crop nearest to the one asked about. */
    private static final class RecordedModel implements LandmarkPipeline.Model {
        private final List<byte[]> crops = new ArrayList<>();
        private final List<float[]> outputs = new ArrayList<>();
        int calls, worstDiff, worstDiffering;

        void add(byte[] crop, float[] output) {
            crops.add(crop);
            outputs.add(output);
        }

        @Override
        public float[] run(byte[] crop) {
            calls++;
            int best = 0, bestDiff = Integer.MAX_VALUE, bestDiffering = 0;
            for (int i = 0; i < crops.size(); i++) {
                int diff = 0, differing = 0;
                byte[] other = crops.get(i);
                for (int j = 0; j < crop.length && other.length == crop.length; j++) {
                    int d = Math.abs((crop[j] & 0xFF) - (other[j] & 0xFF));
                    diff = Math.max(diff, d);
                    differing += d > 0 ? 1 : 0;
                }
                if (other.length == crop.length && diff < bestDiff) {
                    best = i; bestDiff = diff; bestDiffering = differing;
                }
            }
            worstDiff = Math.max(worstDiff, bestDiff);
            worstDiffering = Math.max(worstDiffering, bestDiffering);
            return outputs.get(best).clone();
        }
    }

    private void compareCrops(String name, byte[] crop, byte[] expected, int size) {
        if (crop.length != expected.length) {
            failures.add(name + " crop: " + expected.length + " bytes expected (" + size + "x" + size + "x3), got "
                    + crop.length);
            return;
        }
        int maxDiff = 0, differing = 0;
        for (int i = 0; i < crop.length; i++) {
            int diff = Math.abs((crop[i] & 0xFF) - (expected[i] & 0xFF));
            maxDiff = Math.max(maxDiff, diff);
            differing += diff > 0 ? 1 : 0;
        }
        double fraction = differing / (double) crop.length;
        System.out.printf(Locale.ROOT, "%s: crop max diff %d, %d of %d values differ%n", name, maxDiff, differing,
                crop.length);
        if (maxDiff > CROP_MAX_DIFF || fraction > CROP_DIFF_FRACTION) {
            failures.add(String.format(Locale.ROOT, "%s crop: max diff %d grey levels (allowed %d), %.4f of values "
                    + "differ (allowed %.4f)", name, maxDiff, CROP_MAX_DIFF, fraction, CROP_DIFF_FRACTION));
        }
    }

    /** Normalisation of the expected crop must match exactly; of our own crop, within ~1 grey level. */
    private void checkInput(String name, byte[] expectedCrop, byte[] crop, ModelContract c, Map<String, String[]> kv) {
        float[] tensor = Preprocess.normalise(expectedCrop, c.mean, c.std);
        double[][] stats = channelStats(tensor);
        expectArray(name + " input_mean", stats[0], doubles(kv, "input_mean"), TENSOR_TOL);
        expectArray(name + " input_std", stats[1], doubles(kv, "input_std"), TENSOR_TOL);
        double[] samples = doubles(kv, "input_samples");
        for (int i = 0; i + 1 < samples.length; i += 2) {
            expectNear(name + " input[" + (int) samples[i] + "]", tensor[(int) samples[i]], samples[i + 1], TENSOR_TOL);
        }
        double[][] own = channelStats(Preprocess.normalise(crop, c.mean, c.std));
        expectArray(name + " input_mean (own crop)", own[0], doubles(kv, "input_mean"), OWN_CROP_STATS_TOL);
        checkTensorLayouts(name, expectedCrop, tensor, c);
    }

    /** The bytes Preprocess.fill writes: NHWC float32 in order, NCHW transposed, baked raw pixels. */
    private void checkTensorLayouts(String name, byte[] crop, float[] nhwc, ModelContract c) {
        int s = c.inputSize, plane = s * s;
        ByteBuffer buffer = ByteBuffer.allocateDirect(plane * 3 * 4).order(ByteOrder.nativeOrder());
        Preprocess.fill(crop, s, c, false, TensorSpec.float32("NHWC"), buffer);
        float[] read = Postprocess.read(buffer, TensorSpec.float32("NHWC"), plane * 3);
        Preprocess.fill(crop, s, c, false, TensorSpec.float32("NCHW"), buffer);
        float[] nchw = Postprocess.read(buffer, TensorSpec.float32("NCHW"), plane * 3);
        Preprocess.fill(crop, s, c, true, TensorSpec.float32("NHWC"), buffer);
        float[] baked = Postprocess.read(buffer, TensorSpec.float32("NHWC"), plane * 3);
        int bad = 0;
        for (int p = 0; p < plane; p++) {
            for (int ch = 0; ch < 3; ch++) {
                int i = p * 3 + ch;
                bad += read[i] != nhwc[i] || nchw[ch * plane + p] != nhwc[i] || baked[i] != (crop[i] & 0xFF) ? 1 : 0;
            }
        }
        if (bad > 0) {
            failures.add(name + " tensor fill: " + bad + " values in the wrong place or changed");
        }
    }

    private static double[][] channelStats(float[] tensor) {
        double[] mean = new double[3], std = new double[3];
        int n = tensor.length / 3;
        for (int i = 0; i < tensor.length; i++) {
            mean[i % 3] += tensor[i];
        }
        for (int ch = 0; ch < 3; ch++) {
            mean[ch] /= n;
        }
        for (int i = 0; i < tensor.length; i++) {
            double d = tensor[i] - mean[i % 3];
            std[i % 3] += d * d;
        }
        for (int ch = 0; ch < 3; ch++) {
            std[ch] = Math.sqrt(std[ch] / n);
        }
        return new double[][] {mean, std};
    }

    static RgbImage readPng(File file) throws IOException {
        BufferedImage image = ImageIO.read(file);
        if (image == null) {
            throw new IOException(file + ": not a readable image");
        }
        int w = image.getWidth(), h = image.getHeight();
        return RgbImage.fromArgb(image.getRGB(0, 0, w, h, null, 0, w), w, h);
    }

    static Map<String, String[]> readKeyValues(Path path) throws IOException {
        if (!Files.isRegularFile(path)) {
            throw new IOException(path + ": missing");
        }
        Map<String, String[]> out = new LinkedHashMap<>();
        for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
            String[] parts = line.trim().split("\\s+");
            if (parts.length >= 1 && !parts[0].isEmpty() && !parts[0].startsWith("#")) {
                String[] values = new String[parts.length - 1];
                System.arraycopy(parts, 1, values, 0, values.length);
                out.put(parts[0], values);
            }
        }
        return out;
    }

    private static String one(Map<String, String[]> kv, String key) {
        String[] values = kv.get(key);
        if (values == null || values.length != 1) {
            throw new IllegalArgumentException("golden key '" + key + "' missing or not a single value");
        }
        return values[0];
    }

    private static double[] doubles(Map<String, String[]> kv, String key) {
        String[] values = kv.get(key);
        if (values == null) {
            throw new IllegalArgumentException("golden key '" + key + "' missing");
        }
        double[] out = new double[values.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = Double.parseDouble(values[i]);
        }
        return out;
    }

    private static float[] floats(Map<String, String[]> kv, String key) {
        double[] values = doubles(kv, key);
        float[] out = new float[values.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) values[i];
        }
        return out;
    }

    private static double[] toDoubles(float[] values) {
        double[] out = new double[values.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = values[i];
        }
        return out;
    }

    private static double[] toDoubles(int[] values) {
        double[] out = new double[values.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = values[i];
        }
        return out;
    }

    private void expectNear(String what, double actual, double expected, double tol) {
        if (!(Math.abs(actual - expected) <= tol)) {
            failures.add(String.format(Locale.ROOT, "%s: got %.17g, expected %.17g (tolerance %.3g)", what, actual,
                    expected, tol));
        }
    }

    private void expectArray(String what, double[] actual, double[] expected, double tol) {
        if (actual.length != expected.length) {
            failures.add(what + ": " + actual.length + " values, expected " + expected.length);
            return;
        }
        double worst = 0;
        int worstAt = -1;
        for (int i = 0; i < actual.length; i++) {
            double diff = Math.abs(actual[i] - expected[i]);
            if (!(diff <= worst) || Double.isNaN(diff)) {
                worst = Double.isNaN(diff) ? Double.POSITIVE_INFINITY : diff;
                worstAt = i;
            }
        }
        if (worst > tol) {
            failures.add(String.format(Locale.ROOT, "%s[%d]: got %.17g, expected %.17g (worst of %d, tolerance %.3g)",
                    what, worstAt, actual[worstAt], expected[worstAt], actual.length, tol));
        }
    }
}
