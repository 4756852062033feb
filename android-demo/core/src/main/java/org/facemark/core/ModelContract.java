package org.facemark.core;

import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The parts of RUN/export/manifest.json (schema facemark-manifest-v1, facemark/manifest.py) the
 * app relies on: the crop and input contract, the landmark scheme, and each artifact's I/O facts.
 */
public final class ModelContract {
    public static final String SCHEMA = "facemark-manifest-v1";

    /**
     * The keys this reader cannot do without ("*": any artifact name; infer's only when infer is
     * there). The schema Python generates (docs/manifest.schema.json) must require each of them:
     * SchemaCheck, run by tests/test_contract.py, holds the two sides together.
     */
    public static final List<String> REQUIRED_KEYS = List.of(
            "schema", "input", "input.size", "input.mean", "input.std", "scheme", "scheme.num_points",
            "scheme.pupils", "crop", "crop.margin", "infer.flip", "infer.passes", "infer.flip_permutation",
            "artifacts", "artifacts.*.file", "artifacts.*.format", "artifacts.*.layout");

    public final int inputSize;        // S: the crop is S x S pixels
    public final double margin;        // crop side = max(w, h) * (1 + margin)
    public final float[] mean;         // per RGB channel, applied after /255
    public final float[] std;
    public final String color;         // "RGB"
    public final String schemeName;
    public final int numPoints;        // P: the model outputs 2P values x0, y0, x1, y1, ...
    public final int[][] pupils;       // two index groups (image-left, image-right); each pupil = group mean
    public final String detector;      // the box detector the training/eval crops used
    public final Refinement refinement; // infer: flip averaging and passes (absent: the single pass)
    public final List<Artifact> artifacts;

    /** One exported file and how to feed it. */
    public static final class Artifact {
        public final String name, file, format, layout, inputDtype;
        public final boolean bakedPreprocessing;   // 0-255 RGB pixels in (no /255, mean, std)
        public final boolean outputsCropPixels;    // output.space "crop pixels" (baked) vs "normalised crop"

        Artifact(String name, String file, String format, String layout, String inputDtype, boolean baked,
                 boolean cropPixels) {
            this.name = name; this.file = file; this.format = format; this.layout = layout;
            this.inputDtype = inputDtype; this.bakedPreprocessing = baked; this.outputsCropPixels = cropPixels;
        }
    }

    private ModelContract(int inputSize, double margin, float[] mean, float[] std, String color,
                          String schemeName, int numPoints, int[][] pupils, String detector,
                          Refinement refinement, List<Artifact> artifacts) {
        this.inputSize = inputSize; this.margin = margin; this.mean = mean; this.std = std;
        this.color = color; this.schemeName = schemeName; this.numPoints = numPoints;
        this.pupils = pupils; this.detector = detector; this.refinement = refinement;
        this.artifacts = Collections.unmodifiableList(artifacts);
    }

    /** Parse manifest.json text; IllegalArgumentException names the missing or malformed key. */
    @SuppressWarnings("unchecked")
    public static ModelContract fromManifestJson(String json) {
        Object root = MiniJson.parse(json);
        if (!(root instanceof Map) || !SCHEMA.equals(((Map<String, Object>) root).get("schema"))) {
            throw new IllegalArgumentException("manifest: not a facemark manifest (expected schema " + SCHEMA + ")");
        }
        Map<String, Object> manifest = (Map<String, Object>) root;
        Map<String, Object> input = section(manifest, "input");
        Map<String, Object> scheme = section(manifest, "scheme");
        Map<String, Object> crop = section(manifest, "crop");
        List<Object> pupilGroups = (List<Object>) require(scheme, "pupils", "scheme");
        if (pupilGroups.size() != 2) {
            throw new IllegalArgumentException("manifest: scheme.pupils needs 2 index groups");
        }
        int[][] pupils = {ints((List<Object>) pupilGroups.get(0)), ints((List<Object>) pupilGroups.get(1))};
        List<Artifact> artifacts = new ArrayList<>();
        for (Map.Entry<String, Object> e : section(manifest, "artifacts").entrySet()) {
            if (!(e.getValue() instanceof Map)) {
                throw new IllegalArgumentException("manifest: 'artifacts." + e.getKey() + "' is not a section");
            }
            Map<String, Object> a = (Map<String, Object>) e.getValue();
            String where = "artifacts." + e.getKey();
            boolean baked = Boolean.TRUE.equals(a.get("baked_preprocessing"));
            Object output = a.get("output");
            String space = output instanceof Map ? str((Map<String, Object>) output, "space", "") : "";
            artifacts.add(new Artifact(e.getKey(), text(a, "file", where), text(a, "format", where),
                    text(a, "layout", where), str(a, "input_dtype", "float32"), baked,
                    space.isEmpty() ? baked : "crop pixels".equals(space)));
        }
        int numPoints = num(scheme, "num_points", "scheme").intValue();
        return new ModelContract(
                num(input, "size", "input").intValue(), num(crop, "margin", "crop").doubleValue(),
                floats((List<Object>) require(input, "mean", "input")),
                floats((List<Object>) require(input, "std", "input")),
                str(input, "color", "RGB"), str(scheme, "name", "?"),
                numPoints, pupils, str(crop, "detector", "?"), refinement(manifest.get("infer"), numPoints),
                artifacts);
    }

    /** The manifest's infer section (facemark/runtime/refine.py manifest_record), or the single pass. */
    @SuppressWarnings("unchecked")
    private static Refinement refinement(Object section, int numPoints) {
        if (section == null) {
            return Refinement.single(numPoints);
        }
        if (!(section instanceof Map)) {
            throw new IllegalArgumentException("manifest: 'infer' is not a section");
        }
        Map<String, Object> infer = (Map<String, Object>) section;
        Object flip = require(infer, "flip", "infer");
        if (!(flip instanceof Boolean)) {
            throw new IllegalArgumentException("manifest: 'infer.flip' is not true or false");
        }
        int[] permutation = ints((List<Object>) require(infer, "flip_permutation", "infer"));
        if (permutation.length != numPoints) {
            throw new IllegalArgumentException("manifest: 'infer.flip_permutation' has " + permutation.length
                    + " indices; the scheme has " + numPoints + " points");
        }
        return new Refinement((Boolean) flip, num(infer, "passes", "infer").intValue(), permutation);
    }

    /**
     * The TFLite model to load among {@code assetNames}: {@code preferred} if the manifest lists it
     * and it is present, else the first listed .tflite that is present, else null.
     */
    public Artifact chooseTflite(Collection<String> assetNames, String preferred) {
        Artifact first = null;
        for (Artifact a : artifacts) {
            if (a.file.endsWith(".tflite") && assetNames.contains(a.file)) {
                if (a.file.equals(preferred)) {
                    return a;
                }
                first = first == null ? a : first;
            }
        }
        return first;
    }

    /** The artifact whose file is {@code file}, or null. */
    public Artifact artifactForFile(String file) {
        for (Artifact a : artifacts) {
            if (a.file.equals(file)) {
                return a;
            }
        }
        return null;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> section(Map<String, Object> manifest, String key) {
        Object value = manifest.get(key);
        if (!(value instanceof Map)) {
            throw new IllegalArgumentException("manifest: missing section '" + key + "'");
        }
        return (Map<String, Object>) value;
    }

    private static Object require(Map<String, Object> map, String key, String where) {
        Object value = map.get(key);
        if (value == null) {
            throw new IllegalArgumentException("manifest: missing key '" + where + "." + key + "'");
        }
        return value;
    }

    private static Number num(Map<String, Object> map, String key, String where) {
        Object value = require(map, key, where);
        if (!(value instanceof Number)) {
            throw new IllegalArgumentException("manifest: '" + where + "." + key + "' is not a number");
        }
        return (Number) value;
    }

    private static String text(Map<String, Object> map, String key, String where) {
        Object value = require(map, key, where);
        if (!(value instanceof String)) {
            throw new IllegalArgumentException("manifest: '" + where + "." + key + "' is not a string");
        }
        return (String) value;
    }

    private static String str(Map<String, Object> map, String key, String fallback) {
        Object value = map.get(key);
        return value instanceof String ? (String) value : fallback;
    }

    private static float[] floats(List<Object> values) {
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = ((Number) values.get(i)).floatValue();
        }
        return out;
    }

    private static int[] ints(List<Object> values) {
        int[] out = new int[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = ((Number) values.get(i)).intValue();
        }
        return out;
    }
}
