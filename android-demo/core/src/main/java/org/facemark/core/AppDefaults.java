package org.facemark.core;

/**
 * Names and defaults the app hard-codes. tests/test_android_core.py checks them against the
 * Python side (facemark.manifest.MANIFEST_NAME, facemark.convert.formats.artifact_file) and
 * android-demo/copy_assets.sh, so a rename on either side fails CI.
 */
public final class AppDefaults {
    /** The run's manifest, copied unchanged into app/src/main/assets/. */
    public static final String MANIFEST_ASSET = "manifest.json";
    /** The model the app loads unless another .tflite listed in the manifest is in the assets. */
    public static final String MODEL_ASSET = "model_fp32.tflite";
    /** Interpreter threads on first start (a setting afterwards); big cores of most phones. */
    public static final int DEFAULT_THREADS = 4;
    /** Thread counts offered in the settings. */
    public static final int[] THREAD_CHOICES = {1, 2, 4, 6, 8};
    /** The GPU delegate is off by default: CPU/XNNPACK is the reference path. */
    public static final boolean DEFAULT_USE_GPU = false;

    /**
     * Tracking and filtering per camera frame (configs/base.yaml predict.*: track, redetect_every,
     * lost_iou, match_iou, filter one_euro, min_cutoff, beta, d_cutoff; the test checks they agree).
     */
    public static final Tracker.Settings TRACKING = new Tracker.Settings(true, 30, 0.75, 0.3, true, 0.5, 100.0, 1.0);

    private AppDefaults() {
    }
}
