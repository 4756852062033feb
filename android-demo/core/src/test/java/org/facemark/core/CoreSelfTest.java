package org.facemark.core;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;

/**
 * Checks of :core that need no golden vectors: what only the app does (rotation, the preview
 * mapping, quantised tensors) and the manifest reader. Run by {@link GoldenCheck}, or alone:
 * {@code java -cp CLASSES org.facemark.core.CoreSelfTest} (exit 1 on a failure).
 */
public final class CoreSelfTest {
    private final List<String> failures = new ArrayList<>();

    public static void main(String[] args) {
        List<String> failures = run();
        failures.forEach(f -> System.out.println("FAIL " + f));
        System.out.println(failures.isEmpty() ? "self test: OK" : "self test: " + failures.size() + " failure(s)");
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    /** Every failure, as one line each; empty when all pass. */
    public static List<String> run() {
        CoreSelfTest t = new CoreSelfTest();
        t.rotationMapsCorners();
        t.rotatedCropEqualsUprightCrop();
        t.viewMappingFillsAndMirrors();
        t.inverseAndCompose();
        t.quantisedTensorsRoundTrip();
        t.manifestReader();
        t.manifestInfer();
        t.chooseLargestFace();
        t.rgbaPlaneWithPadding();
        return t.failures;
    }

    /** CameraX RGBA planes: 4 bytes per pixel and rows padded to rowStride; the last row unpadded. */
    private void rgbaPlaneWithPadding() {
        int w = 3, h = 2, rowStride = 16;
        ByteBuffer plane = ByteBuffer.allocate(rowStride + w * 4);
        int[] argb = new int[w * h];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int r = 10 * y + x, g = 100 + r, b = 200 + r;
                argb[y * w + x] = 0xFF000000 | r << 16 | g << 8 | b;
                plane.put(y * rowStride + x * 4, (byte) r).put(y * rowStride + x * 4 + 1, (byte) g)
                        .put(y * rowStride + x * 4 + 2, (byte) b).put(y * rowStride + x * 4 + 3, (byte) 255);
            }
        }
        if (!Arrays.equals(RgbImage.fromRgba(plane, w, h, rowStride, 4).pixels, RgbImage.fromArgb(argb, w, h).pixels)) {
            failures.add("RGBA plane with row padding read differently from ARGB pixels");
        }
        TensorSpec int8 = new TensorSpec(TensorSpec.DType.INT8, "NHWC", 1f, 0);
        if (int8.quantize(-2.5f) != -3 || int8.quantize(2.5f) != 3 || int8.quantize(-2.4f) != -2) {
            failures.add("quantisation does not round half away from zero");
        }
    }

    private void rotationMapsCorners() {
        int w = 6, h = 4;
        // (sensor corner) -> (upright corner) for a clockwise rotation of the frame
        check("rot90 top-left", Affine.uprightFromSensor(90, w, h).apply(new double[] {0, 0}), h - 1, 0);
        check("rot90 top-right", Affine.uprightFromSensor(90, w, h).apply(new double[] {w - 1, 0}), h - 1, w - 1);
        check("rot180 top-left", Affine.uprightFromSensor(180, w, h).apply(new double[] {0, 0}), w - 1, h - 1);
        check("rot270 top-left", Affine.uprightFromSensor(270, w, h).apply(new double[] {0, 0}), 0, w - 1);
        check("rot-90 = rot270", Affine.uprightFromSensor(-90, w, h).apply(new double[] {2, 1}),
                Affine.uprightFromSensor(270, w, h).apply(new double[] {2, 1}));
    }

    /** Cropping a sensor-oriented frame through the composed map = cropping the upright frame. */
    private void rotatedCropEqualsUprightCrop() {
        Random random = new Random(7);
        int w = 37, h = 29;
        RgbImage upright = smoothImage(w, h, random);
        Box box = new Box(5.3, 4.1, 27.9, 22.6);
        ModelContract contract = contract(24, 0.2);
        Affine cropMatrix = Affine.cropFromBox(box, 24, 0.2);
        byte[] reference = CropSampler.warp(upright, cropMatrix, 24);
        for (int degrees : new int[] {0, 90, 180, 270}) {
            RgbImage sensor = rotateBack(upright, degrees);
            byte[] crop = new LandmarkPipeline(contract).crop(sensor, degrees, box).pixels;
            int maxDiff = 0;
            for (int i = 0; i < crop.length; i++) {
                maxDiff = Math.max(maxDiff, Math.abs((crop[i] & 0xFF) - (reference[i] & 0xFF)));
            }
            if (maxDiff > 1) {
                failures.add("crop of a frame rotated " + degrees + " differs by " + maxDiff + " grey levels");
            }
        }
    }

    private void viewMappingFillsAndMirrors() {
        // 480x640 upright frame in a 1080x1920 view: scale 3 (height-limited), 60 px cut left and right
        Affine view = Affine.viewFromImage(480, 640, 1080, 1920, false);
        check("view left edge", view.apply(new double[] {-0.5, -0.5}), -0.5 - 180, -0.5);
        check("view centre", view.apply(new double[] {239.5, 319.5}), 539.5, 959.5);
        Affine mirrored = Affine.viewFromImage(480, 640, 1080, 1920, true);
        check("mirrored centre", mirrored.apply(new double[] {239.5, 319.5}), 539.5, 959.5);
        check("mirrored left edge", mirrored.apply(new double[] {-0.5, -0.5}), 1079.5 + 180, -0.5);
    }

    private void inverseAndCompose() {
        Affine m = new Affine(0.8, 0.1, -3.0, -0.2, 1.3, 7.5);
        double[] p = {3.0, -4.0, 10.0, 2.5};
        check("inverse", m.inverse().apply(m.apply(p)), p);
        Affine n = Affine.uprightFromSensor(90, 10, 8);
        check("compose", m.then(n).apply(p), n.apply(m.apply(p)));
    }

    private void quantisedTensorsRoundTrip() {
        ModelContract c = contract(2, 0.2);
        byte[] crop = {0, 10, 20, (byte) 128, (byte) 200, (byte) 255, 1, 2, 3, 4, 5, 6};
        float[] real = Preprocess.normalise(crop, c.mean, c.std);
        for (TensorSpec spec : new TensorSpec[] {
                new TensorSpec(TensorSpec.DType.INT8, "NHWC", 0.025f, -3),
                new TensorSpec(TensorSpec.DType.UINT8, "NHWC", 0.025f, 125)}) {
            ByteBuffer buffer = ByteBuffer.allocate(crop.length);
            Preprocess.fill(crop, 2, c, false, spec, buffer);
            float[] back = Postprocess.read(buffer, spec, crop.length);
            for (int i = 0; i < crop.length; i++) {
                if (Math.abs(back[i] - real[i]) > spec.scale / 2 + 1e-6) {
                    failures.add(String.format(Locale.ROOT, "%s input %d: %f -> %f, more than half a step off",
                            spec.dtype, i, real[i], back[i]));
                }
            }
        }
        TensorSpec int8 = new TensorSpec(TensorSpec.DType.INT8, "NHWC", 0.1f, 0);
        if (int8.quantize(100f) != 127 || int8.quantize(-100f) != -128) {
            failures.add("int8 quantisation does not saturate");
        }
    }

    @SuppressWarnings("unchecked")
    private void manifestReader() {
        String json = "{\"schema\": \"facemark-manifest-v1\", \"note\": \"a \\\"quoted\\\" \\u00e9\\n\","
                + " \"input\": {\"size\": 224, \"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]},"
                + " \"scheme\": {\"name\": \"ibug68\", \"num_points\": 68, \"pupils\": [[36, 37], [42, 43]],"
                + " \"corners\": [36, 45]}, \"crop\": {\"margin\": 0.2, \"detector\": \"mtcnn\"},"
                + " \"artifacts\": {\"tflite_fp32_baked\": {\"file\": \"model_fp32_baked.tflite\","
                + " \"format\": \"tflite\","
                + " \"layout\": \"NHWC\", \"input_dtype\": \"uint8\", \"baked_preprocessing\": true,"
                + " \"output\": {\"space\": \"crop pixels\"},"
                + " \"parity\": {\"max\": NaN, \"worst\": -Infinity, \"n\": -1.5e-3}}}}";
        ModelContract c = ModelContract.fromManifestJson(json);
        ModelContract.Artifact a = c.artifactForFile("model_fp32_baked.tflite");
        if (c.inputSize != 224 || c.numPoints != 68 || c.pupils[1][1] != 43 || c.margin != 0.2 || a == null
                || !a.bakedPreprocessing || !a.outputsCropPixels || !"uint8".equals(a.inputDtype)
                || c.std[2] != 0.225f) {
            failures.add("manifest reader misread the contract");
        }
        ModelContract.Artifact fp16 = ModelContract.fromManifestJson(json.replace("}}}}",
                "}}, \"tflite_fp16\": {\"file\": \"model_fp16.tflite\", \"format\": \"tflite\","
                + " \"layout\": \"NHWC\"}}}"))
                .chooseTflite(Arrays.asList("model_fp16.tflite", "README.md"), AppDefaults.MODEL_ASSET);
        if (fp16 == null || !"model_fp16.tflite".equals(fp16.file)
                || c.chooseTflite(Arrays.asList("model_fp32_baked.tflite"), "model_fp32_baked.tflite") != a
                || c.chooseTflite(Arrays.asList("manifest.json"), AppDefaults.MODEL_ASSET) != null) {
            failures.add("chooseTflite picks the wrong model");
        }
        Map<String, Object> root = (Map<String, Object>) MiniJson.parse(json);
        if (!"a \"quoted\" \u00e9\n".equals(root.get("note"))) {
            failures.add("JSON string escapes misread: " + root.get("note"));
        }
        for (String bad : new String[] {"{\"a\": 1,}", "[1 2]", "{\"a\" 1}", "\"open", "{} x"}) {
            try {
                MiniJson.parse(bad);
                failures.add("JSON reader accepted " + bad);
            } catch (IllegalArgumentException expected) {
                // the wanted outcome
            }
        }
    }

    /** The manifest's infer section: read, or the single pass when absent; a bad permutation is refused. */
    private void manifestInfer() {
        String base = "{\"schema\": \"facemark-manifest-v1\", \"input\": {\"size\": 8, \"mean\": [0, 0, 0],"
                + " \"std\": [1, 1, 1]}, \"scheme\": {\"name\": \"x\", \"num_points\": 3, \"pupils\": [[0], [2]]},"
                + " \"crop\": {\"margin\": 0.2}, \"artifacts\": {}";
        Refinement plain = ModelContract.fromManifestJson(base + "}").refinement;
        Refinement read = ModelContract.fromManifestJson(base + ", \"infer\": {\"flip\": true, \"passes\": 2,"
                + " \"flip_permutation\": [2, 1, 0]}}").refinement;
        // point 0 is mirrored point 2 (x 4 -> 8 - 1 - 4 = 3, y 5 kept)
        double[] back = read.unmirror(new double[] {0, 1, 2, 3, 4, 5}, 8);
        if (plain.flip || plain.passes != 1 || !read.flip || read.passes != 2 || read.modelCalls() != 4
                || back[0] != 3.0 || back[1] != 5.0 || back[4] != 7.0 || !"flip + 2 passes".equals(read.toString())) {
            failures.add("manifest infer section misread: " + read + ", unmirror " + Arrays.toString(back));
        }
        byte[] crop = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};   // 2 x 2 RGB
        if (!Arrays.equals(Refinement.mirror(crop, 2), new byte[] {4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9})) {
            failures.add("mirror does not reverse the crop's columns");
        }
        for (String bad : new String[] {"[0, 0, 1]", "[0, 1]"}) {
            try {
                ModelContract.fromManifestJson(base + ", \"infer\": {\"flip\": true, \"passes\": 1,"
                        + " \"flip_permutation\": " + bad + "}}");
                failures.add("manifest reader accepted flip_permutation " + bad);
            } catch (IllegalArgumentException expected) {
                // the wanted outcome
            }
        }
    }

    private void chooseLargestFace() {
        Box small = new Box(0, 0, 10, 10), large = new Box(50, 50, 90, 95);
        if (LandmarkPipeline.chooseFace(Arrays.asList(small, large)) != large
                || LandmarkPipeline.chooseFace(new ArrayList<>()) != null) {
            failures.add("chooseFace does not pick the largest box");
        }
    }

    private static ModelContract contract(int size, double margin) {
        return ModelContract.fromManifestJson("{\"schema\": \"facemark-manifest-v1\", \"input\": {\"size\": " + size
                + ", \"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]}, \"scheme\": {\"name\": \"x\","
                + " \"num_points\": 1, \"pupils\": [[0], [0]]}, \"crop\": {\"margin\": " + margin + "},"
                + " \"artifacts\": {}}");
    }

    private static RgbImage smoothImage(int w, int h, Random random) {
        byte[] px = new byte[w * h * 3];
        double fx = 0.3 + random.nextDouble(), fy = 0.2 + random.nextDouble();
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                for (int ch = 0; ch < 3; ch++) {
                    px[(y * w + x) * 3 + ch] = (byte) (127 + 120 * Math.sin(fx * x + fy * y + ch));
                }
            }
        }
        return new RgbImage(w, h, px);
    }

    /** The sensor frame that {@code degrees} of clockwise rotation turns into {@code upright}. */
    private static RgbImage rotateBack(RgbImage upright, int degrees) {
        boolean swap = degrees % 180 != 0;
        int w = swap ? upright.height : upright.width, h = swap ? upright.width : upright.height;
        Affine toUpright = Affine.uprightFromSensor(degrees, w, h);
        byte[] px = new byte[w * h * 3];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                double[] u = toUpright.apply(new double[] {x, y});
                for (int ch = 0; ch < 3; ch++) {
                    px[(y * w + x) * 3 + ch] = (byte) upright.at((int) Math.round(u[0]), (int) Math.round(u[1]), ch);
                }
            }
        }
        return new RgbImage(w, h, px);
    }

    private void check(String what, double[] actual, double... expected) {
        for (int i = 0; i < expected.length; i++) {
            if (Math.abs(actual[i] - expected[i]) > 1e-9) {
                failures.add(what + ": got " + Arrays.toString(actual) + ", expected " + Arrays.toString(expected));
                return;
            }
        }
    }
}
