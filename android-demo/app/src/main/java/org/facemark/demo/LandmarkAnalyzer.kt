package org.facemark.demo

import android.os.SystemClock
import android.util.Log
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import com.google.android.gms.tasks.Tasks
import com.google.mlkit.vision.common.InputImage
import com.google.mlkit.vision.face.FaceDetection
import com.google.mlkit.vision.face.FaceDetectorOptions
import org.facemark.core.AppDefaults
import org.facemark.core.Box
import org.facemark.core.LandmarkPipeline
import org.facemark.core.Postprocess
import org.facemark.core.RgbImage
import org.facemark.core.Tracker

/** What one analysed frame produced; points and pupils are in upright frame pixels. */
class FrameResult(
    val points: DoubleArray,        // 2P filtered values x0, y0, x1, y1, ... of the main face; empty when no face
    val pupils: DoubleArray,        // image-left x, y, image-right x, y; empty when no face
    val uprightWidth: Int,
    val uprightHeight: Int,
    val modelMs: Double,            // crops + interpreter + decoding, every refinement pass, every face
    val frameMs: Double,            // the whole frame, face detection (when it ran) included
    val detected: Boolean,          // ML Kit ran on this frame
)

/**
 * CameraX analyzer: :core's [Tracker] (the mirror of facemark/tracking.py, settings
 * [AppDefaults.TRACKING] = configs/base.yaml predict.*) decides per frame whether ML Kit runs: on
 * the first frame, every `redetect_every` frames, while there is no face and when a face is lost.
 * Otherwise each face is cropped from the landmark box of its last landmarks. :core crops it from
 * the RGBA frame as delivered (sensor orientation, rotation folded into the crop affine), the model
 * runs (as often as the manifest's refinement asks), the points come back in upright frame pixels
 * and the One Euro filter smooths them. Runs on the analysis executor; the model may be replaced
 * between frames with [replaceModel] on that same executor (the tracks start again).
 */
class LandmarkAnalyzer(private val onResult: (FrameResult) -> Unit) : ImageAnalysis.Analyzer, AutoCloseable {
    private val detector = FaceDetection.getClient(
        FaceDetectorOptions.Builder()
            .setPerformanceMode(FaceDetectorOptions.PERFORMANCE_MODE_FAST)
            .setMinFaceSize(MIN_FACE_SIZE)
            .build(),
    )
    private var model: LandmarkModel? = null
    private var pipeline: LandmarkPipeline? = null
    private var tracker = Tracker(AppDefaults.TRACKING, CAMERA_FPS)

    /** Use [next] from the next frame on (null: analyse nothing); closes the previous model. */
    fun replaceModel(next: LandmarkModel?) {
        model?.close()
        model = next
        pipeline = next?.let { LandmarkPipeline(it.contract) }
        tracker = Tracker(AppDefaults.TRACKING, CAMERA_FPS)
    }

    override fun analyze(image: ImageProxy) {
        try {
            val current = model ?: return
            onResult(process(image, current, pipeline!!))
        } catch (e: Exception) {
            Log.e(TAG, "frame failed", e)
        } finally {
            image.close()
        }
    }

    private fun process(image: ImageProxy, model: LandmarkModel, pipeline: LandmarkPipeline): FrameResult {
        val start = SystemClock.elapsedRealtimeNanos()
        val rotation = image.imageInfo.rotationDegrees
        val swap = rotation % 180 != 0
        val uprightWidth = if (swap) image.height else image.width
        val uprightHeight = if (swap) image.width else image.height
        val plane = image.planes[0]
        val rgb = RgbImage.fromRgba(plane.buffer, image.width, image.height, plane.rowStride, plane.pixelStride)
        var modelNanos = 0L
        var detected = false
        val frame = object : Tracker.Frame {
            override fun width() = uprightWidth
            override fun height() = uprightHeight

            // ML Kit gets the frame and its rotation and answers in upright pixels; largest face first
            override fun detect(): List<Tracker.Detection> {
                detected = true
                val faces = Tasks.await(detector.process(InputImage.fromBitmap(image.toBitmap(), rotation)))
                return faces.map { face ->
                    val r = face.boundingBox
                    Tracker.Detection(Box(r.left.toDouble(), r.top.toDouble(), r.right.toDouble(), r.bottom.toDouble()), 1.0)
                }.sortedByDescending { it.box.area() }
            }

            // every pass of the manifest's refinement (infer: flip, passes) calls the model
            override fun landmarks(boxes: Array<Box>): Array<DoubleArray> {
                val modelStart = SystemClock.elapsedRealtimeNanos()
                val points = Array(boxes.size) { i ->
                    pipeline.landmarks(rgb, rotation, boxes[i], LandmarkPipeline.Model { crop -> model.run(crop) },
                        model.artifact.outputsCropPixels)
                }
                modelNanos += SystemClock.elapsedRealtimeNanos() - modelStart
                return points
            }
        }
        val faces = tracker.step(frame)
        // the face shown: the longest-tracked one (the lowest id), its filtered points
        val face = faces.minByOrNull { it.id }
            ?: return FrameResult(DoubleArray(0), DoubleArray(0), uprightWidth, uprightHeight, modelNanos / 1e6,
                msSince(start), detected)
        val pupils = Postprocess.pupilCentres(face.filtered, model.contract.pupils)
        return FrameResult(face.filtered, pupils, uprightWidth, uprightHeight, modelNanos / 1e6, msSince(start), detected)
    }

    override fun close() {
        replaceModel(null)
        detector.close()
    }

    private companion object {
        const val TAG = "facemark"
        const val MIN_FACE_SIZE = 0.15f   // of the frame width: ignore small background faces
        // the filter's clock: ImageAnalysis keeps the latest frame only, so frames arrive at about the
        // camera's rate; the One Euro cutoffs are in Hz of this clock
        const val CAMERA_FPS = 30.0

        fun msSince(startNanos: Long): Double = (SystemClock.elapsedRealtimeNanos() - startNanos) / 1e6
    }
}
