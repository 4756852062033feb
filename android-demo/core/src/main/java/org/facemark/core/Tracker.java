package org.facemark.core;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Faces tracked across camera frames with stable ids: the Java side of facemark/tracking.py, the
 * same decisions in the same order, checked against it on a recorded sequence (TrackingCheck).
 *
 * <p>Frame t's crop of a face is the landmark box of its frame t-1 landmarks ({@link
 * Refinement#landmarkBox}, the landmark-box crop of training). The detector runs on the first
 * frame, every {@code redetectEvery} frames, on every frame without a face, and on a frame where a
 * face is lost: its new landmark box overlaps the box it was cropped from less than {@code lostIou},
 * its centre left the frame, or a landmark is not finite. A detection continues the track it
 * overlaps most (at least {@code matchIou}, greedy by IoU) and keeps its id; a re-detection keeps
 * a live track's landmark-box crop. {@code track = false} is detect-every-frame. All boxes and
 * points are upright frame pixels; points are 2P arrays x0, y0, x1, y1, ...
 */
public final class Tracker {
    /** The predict section's settings (configs/base.yaml: predict.*). */
    public static final class Settings {
        public final boolean track;
        public final int redetectEvery;
        public final double lostIou, matchIou;
        public final boolean oneEuro;   // predict.filter: one_euro, else none
        public final double minCutoff, beta, dCutoff;

        public Settings(boolean track, int redetectEvery, double lostIou, double matchIou, boolean oneEuro,
                        double minCutoff, double beta, double dCutoff) {
            if (redetectEvery < 1) {
                throw new IllegalArgumentException("redetectEvery must be >= 1, got " + redetectEvery);
            }
            this.track = track; this.redetectEvery = redetectEvery; this.lostIou = lostIou; this.matchIou = matchIou;
            this.oneEuro = oneEuro; this.minCutoff = minCutoff; this.beta = beta; this.dCutoff = dCutoff;
        }
    }

    /** A detector box with its score. */
    public static final class Detection {
        public final Box box;
        public final double score;

        public Detection(Box box, double score) {
            this.box = box; this.score = score;
        }
    }

    /** One frame as the tracker needs it: its size, its detector and the landmark model on it. */
    public interface Frame {
        int width();

        int height();

        /** The detector on this frame, largest face first. */
        List<Detection> detect();

        /** The refined 2P landmarks of the crop of each box (LandmarkPipeline.landmarks per box). */
        double[][] landmarks(Box[] boxes);
    }

    /** One face of one frame. */
    public static final class Face {
        public final int id;
        public final Box box;           // the box this frame was cropped from
        public final double score;      // the detector's score when the track was last matched
        public final boolean detected;  // box is this frame's detection
        public final double[] landmarks, filtered;

        Face(int id, Box box, double score, boolean detected, double[] landmarks, double[] filtered) {
            this.id = id; this.box = box; this.score = score; this.detected = detected;
            this.landmarks = landmarks; this.filtered = filtered;
        }
    }

    private static final class Track {
        final int id;
        Box box;
        double score;
        boolean detected;
        final OneEuroFilter filter;   // null: predict.filter none

        Track(int id, Box box, double score, OneEuroFilter filter) {
            this.id = id; this.box = box; this.score = score; this.detected = true; this.filter = filter;
        }
    }

    private final Settings settings;
    private final double fps;
    private List<Track> tracks = new ArrayList<>();
    private int frame;
    private int lastDetection = -1;
    private int nextId;
    private int detectorCalls;
    private int lost;

    public Tracker(Settings settings, double fps) {
        if (!(fps > 0)) {
            throw new IllegalArgumentException("fps must be > 0, got " + fps);
        }
        this.settings = settings;
        this.fps = fps;
    }

    public int detectorCalls() {
        return detectorCalls;
    }

    public int lost() {
        return lost;
    }

    /** The next frame -> its faces, by id. */
    public List<Face> step(Frame image) {
        double timeS = frame / fps;
        List<Detection> detections = null;
        if (due()) {
            detections = runDetector(image);
            match(detections, new ArrayList<>(), true);
        }
        List<Track> lostNow = new ArrayList<>();
        List<Face> faces = advance(image, tracks, timeS, lostNow);
        if (!lostNow.isEmpty()) {
            lost += lostNow.size();
            tracks.removeAll(lostNow);
            if (detections == null) {
                detections = runDetector(image);
            }
            List<Track> fresh = match(detections, lostNow, false);
            List<Track> broken = new ArrayList<>();
            faces.addAll(advance(image, fresh, timeS, broken));
            tracks.removeAll(broken);
        }
        frame++;
        faces.sort(Comparator.comparingInt(face -> face.id));
        return faces;
    }

    private boolean due() {
        return !settings.track || tracks.isEmpty() || lastDetection < 0
                || frame - lastDetection >= settings.redetectEvery;
    }

    private List<Detection> runDetector(Frame image) {
        detectorCalls++;
        lastDetection = frame;
        return image.detect();
    }

    /** Detections -> live tracks then the lost ones, by IoU; new tracks for the rest (tracking.py _match). */
    private List<Track> match(List<Detection> detections, List<Track> lostTracks, boolean dropUnmatched) {
        List<Track> pool = new ArrayList<>(tracks);
        pool.addAll(lostTracks);
        List<double[]> pairs = new ArrayList<>();   // {iou, track index, detection index}
        for (int t = 0; t < pool.size(); t++) {
            for (int d = 0; d < detections.size(); d++) {
                pairs.add(new double[] {pool.get(t).box.iou(detections.get(d).box), t, d});
            }
        }
        // Python sorts (iou, t, d) tuples in reverse: equal IoUs go to the higher indices first
        pairs.sort((a, b) -> a[0] != b[0] ? Double.compare(b[0], a[0])
                : a[1] != b[1] ? Double.compare(b[1], a[1]) : Double.compare(b[2], a[2]));
        int[] matched = new int[pool.size()];
        java.util.Arrays.fill(matched, -1);
        boolean[] taken = new boolean[detections.size()];
        for (double[] pair : pairs) {
            int t = (int) pair[1], d = (int) pair[2];
            if (pair[0] >= settings.matchIou && matched[t] < 0 && !taken[d]) {
                matched[t] = d;
                taken[d] = true;
            }
        }
        int live = tracks.size();
        List<Track> fresh = new ArrayList<>();
        for (int t = 0; t < pool.size(); t++) {
            if (matched[t] >= 0) {
                Track track = pool.get(t);
                Detection detection = detections.get(matched[t]);
                track.score = detection.score;
                if (t >= live || !settings.track) {
                    track.box = detection.box;
                    track.detected = true;
                }
                if (t >= live) {
                    if (track.filter != null) {
                        track.filter.reset();
                    }
                    fresh.add(track);
                }
            }
        }
        List<Track> kept = new ArrayList<>();
        for (int t = 0; t < live; t++) {
            if (matched[t] >= 0 || !dropUnmatched) {
                kept.add(tracks.get(t));
            }
        }
        for (int d = 0; d < detections.size(); d++) {
            if (!taken[d]) {
                Detection detection = detections.get(d);
                fresh.add(new Track(nextId++, detection.box, detection.score, settings.oneEuro
                        ? new OneEuroFilter(settings.minCutoff, settings.beta, settings.dCutoff) : null));
            }
        }
        kept.addAll(fresh);
        tracks = kept;
        return fresh;
    }

    /** Landmarks of the tracks on this frame -> their faces; the lost ones are added to lostOut. */
    private List<Face> advance(Frame image, List<Track> which, double timeS, List<Track> lostOut) {
        List<Face> faces = new ArrayList<>();
        if (which.isEmpty()) {
            return faces;
        }
        Box[] boxes = new Box[which.size()];
        for (int i = 0; i < boxes.length; i++) {
            boxes[i] = which.get(i).box;
        }
        double[][] points = image.landmarks(boxes);
        for (int i = 0; i < boxes.length; i++) {
            Track track = which.get(i);
            if (isLost(track, points[i], image)) {
                lostOut.add(track);
                continue;
            }
            Box box = Refinement.landmarkBox(points[i]);
            double scale = Math.max(box.width(), box.height());
            double[] filtered = track.filter == null ? points[i].clone() : track.filter.filter(points[i], timeS, scale);
            faces.add(new Face(track.id, track.box, track.score, track.detected, points[i], filtered));
            if (settings.track) {   // detect-every-frame matches the next detections against this one
                track.box = box;
                track.detected = false;
            }
        }
        return faces;
    }

    private boolean isLost(Track track, double[] points, Frame image) {
        for (double value : points) {
            if (!Double.isFinite(value)) {
                return true;
            }
        }
        if (track.detected) {
            return false;
        }
        Box box = Refinement.landmarkBox(points);
        double cx = (box.x0 + box.x1) / 2.0, cy = (box.y0 + box.y1) / 2.0;
        if (!(cx >= 0.0 && cx < image.width() && cy >= 0.0 && cy < image.height())) {
            return true;
        }
        return box.iou(track.box) < settings.lostIou;
    }
}
