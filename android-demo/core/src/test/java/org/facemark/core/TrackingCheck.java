package org.facemark.core;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Checks {@link Tracker} and {@link OneEuroFilter} against a sequence recorded from the Python
 * tracker (facemark/tracking.py, written by tests/test_android_core.py): per frame, what the
 * detector returned when Python ran it, every landmark call (the boxes asked for and the points
 * returned), and the faces out (id, box, detected, raw and filtered landmarks).
 *
 * <pre>java -cp CLASSES org.facemark.core.TrackingCheck sequence.json</pre>
 *
 * The Java tracker replays the recorded detector and model: it must run the detector on the same
 * frames, ask for the same boxes and give out the same faces. Exit 0 when all agree, 1 otherwise
 * (each disagreement printed), 2 when the file is missing or malformed.
 */
public final class TrackingCheck {
    static final double TOL = 1e-9;   // pixels: the same double arithmetic on both sides

    private final List<String> failures = new ArrayList<>();

    public static void main(String[] args) {
        Map<String, Object> sequence;
        try {
            sequence = asMap(MiniJson.parse(new String(Files.readAllBytes(Paths.get(args[0])), StandardCharsets.UTF_8)));
        } catch (IOException | RuntimeException e) {
            System.out.println("tracking check: cannot read " + (args.length > 0 ? args[0] : "(no file given)") + ": " + e);
            System.exit(2);
            return;
        }
        TrackingCheck check = new TrackingCheck();
        int frames = check.run(sequence);
        for (String failure : check.failures) {
            System.out.println("FAIL " + failure);
        }
        System.out.println(check.failures.isEmpty() ? "tracking check: OK (" + frames + " frames)"
                : "tracking check: " + check.failures.size() + " disagreement(s)");
        System.exit(check.failures.isEmpty() ? 0 : 1);
    }

    int run(Map<String, Object> sequence) {
        Map<String, Object> s = asMap(sequence.get("settings"));
        Tracker.Settings settings = new Tracker.Settings((Boolean) s.get("track"), (int) num(s.get("redetect_every")),
                num(s.get("lost_iou")), num(s.get("match_iou")), "one_euro".equals(s.get("filter")),
                num(s.get("min_cutoff")), num(s.get("beta")), num(s.get("d_cutoff")));
        Tracker tracker = new Tracker(settings, num(sequence.get("fps")));
        int width = (int) num(sequence.get("width")), height = (int) num(sequence.get("height"));
        List<Object> frames = asList(sequence.get("frames"));
        for (int f = 0; f < frames.size(); f++) {
            Replay replay = new Replay(f, asMap(frames.get(f)), width, height);
            List<Tracker.Face> faces = tracker.step(replay);
            if (!replay.calls.isEmpty()) {
                failures.add("frame " + f + ": " + replay.calls.size() + " landmark call(s) Python made were not made");
            }
            if (replay.detections != null && !replay.detectorRan) {
                failures.add("frame " + f + ": Python ran the detector, Java did not");
            }
            compareFaces(f, faces, asList(asMap(frames.get(f)).get("faces")));
        }
        return frames.size();
    }

    private void compareFaces(int f, List<Tracker.Face> faces, List<Object> expected) {
        if (faces.size() != expected.size()) {
            failures.add("frame " + f + ": " + faces.size() + " faces, Python " + expected.size());
            return;
        }
        for (int i = 0; i < faces.size(); i++) {
            Tracker.Face face = faces.get(i);
            Map<String, Object> want = asMap(expected.get(i));
            String name = "frame " + f + " face " + i;
            if (face.id != (int) num(want.get("id")) || face.detected != (Boolean) want.get("detected")) {
                failures.add(name + ": id " + face.id + " detected " + face.detected + ", Python " + want.get("id")
                        + " " + want.get("detected"));
            }
            close(name + " box", new double[] {face.box.x0, face.box.y0, face.box.x1, face.box.y1}, doubles(want.get("box")));
            close(name + " landmarks", face.landmarks, doubles(want.get("landmarks")));
            close(name + " filtered", face.filtered, doubles(want.get("filtered")));
        }
    }

    private void close(String what, double[] got, double[] want) {
        if (got.length != want.length) {
            failures.add(what + ": " + got.length + " values, Python " + want.length);
            return;
        }
        for (int i = 0; i < got.length; i++) {
            if (!(Math.abs(got[i] - want[i]) <= TOL)) {
                failures.add(String.format(Locale.ROOT, "%s[%d]: %.17g, Python %.17g", what, i, got[i], want[i]));
                return;
            }
        }
    }

    /** One recorded frame: the detector's answer and the model's answers, in Python's call order. */
    private final class Replay implements Tracker.Frame {
        final int index, width, height;
        final List<Object> detections;
        final Deque<Map<String, Object>> calls = new ArrayDeque<>();
        boolean detectorRan;

        Replay(int index, Map<String, Object> frame, int width, int height) {
            this.index = index; this.width = width; this.height = height;
            Object recorded = frame.get("detections");
            detections = recorded == null ? null : asList(recorded);
            for (Object call : asList(frame.get("calls"))) {
                calls.add(asMap(call));
            }
        }

        @Override
        public int width() {
            return width;
        }

        @Override
        public int height() {
            return height;
        }

        @Override
        public List<Tracker.Detection> detect() {
            detectorRan = true;
            List<Tracker.Detection> out = new ArrayList<>();
            if (detections == null) {
                failures.add("frame " + index + ": Java ran the detector, Python did not");
                return out;
            }
            for (Object item : detections) {
                double[] d = doubles(item);
                out.add(new Tracker.Detection(new Box(d[0], d[1], d[2], d[3]), d[4]));
            }
            return out;
        }

        @Override
        public double[][] landmarks(Box[] boxes) {
            Map<String, Object> call = calls.poll();
            if (call == null) {
                failures.add("frame " + index + ": a landmark call Python did not make");
                return new double[boxes.length][0];
            }
            List<Object> asked = asList(call.get("boxes"));
            List<Object> points = asList(call.get("points"));
            if (asked.size() != boxes.length) {
                failures.add("frame " + index + ": landmarks of " + boxes.length + " boxes, Python " + asked.size());
            }
            double[][] out = new double[boxes.length][];
            for (int i = 0; i < boxes.length; i++) {
                if (i < asked.size()) {
                    close("frame " + index + " crop box " + i, new double[] {boxes[i].x0, boxes[i].y0, boxes[i].x1,
                            boxes[i].y1}, doubles(asked.get(i)));
                }
                out[i] = i < points.size() ? doubles(points.get(i)) : new double[0];
            }
            return out;
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> asMap(Object value) {
        return (Map<String, Object>) value;
    }

    @SuppressWarnings("unchecked")
    private static List<Object> asList(Object value) {
        return (List<Object>) value;
    }

    private static double num(Object value) {
        return (Double) value;
    }

    private static double[] doubles(Object value) {
        List<Object> list = asList(value);
        double[] out = new double[list.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (Double) list.get(i);
        }
        return out;
    }
}
