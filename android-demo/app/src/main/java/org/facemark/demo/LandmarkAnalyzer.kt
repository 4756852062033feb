package org.facemark.demo

import android.os.SystemClock
import android.util.Log
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import com.google.android.gms.tasks.Tasks
import com.google.mlkit.vision.common.InputImage
import com.google.mlkit.vision.face.FaceDetection
import com.google.mlkit.vision.face.FaceDetectorOptions
import org.facemark.core.Box
import org.facemark.core.LandmarkPipeline
import org.facemark.core.Postprocess
import org.facemark.core.RgbImage

/** What one analysed frame produced; points and pupils are in upright frame pixels. */
class FrameResult(
    val points: DoubleArray,        // 2P values x0, y0, x1, y1, ...; empty when no face
    val pupils: DoubleArray,        // image-left x, y, image-right x, y; empty when no face
    val uprightWidth: Int,
    val uprightHeight: Int,
    val modelMs: Double,            // crops + interpreter + decoding, every refinement pass
    val frameMs: Double,            // the whole frame, face detection included
)

/**
 * CameraX analyzer: ML Kit finds the face box on the upright frame, :core crops it from the
 * RGBA frame as delivered (sensor orientation, rotation folded into the crop affine), the model
 * runs (as often as the manifest's refinement asks), and the points come back in upright frame
 * pixels. Runs on the analysis executor; the model may be replaced between frames with
 * [replaceModel] on that same executor.
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

    /** Use [next] from the next frame on (null: analyse nothing); closes the previous model. */
    fun replaceModel(next: LandmarkModel?) {
        model?.close()
        model = next
        pipeline = next?.let { LandmarkPipeline(it.contract) }
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
        // ML Kit gets the frame and its rotation and answers in upright pixels
        val faces = Tasks.await(detector.process(InputImage.fromBitmap(image.toBitmap(), rotation)))
        val box = LandmarkPipeline.chooseFace(faces.map { face ->
            val r = face.boundingBox
            Box(r.left.toDouble(), r.top.toDouble(), r.right.toDouble(), r.bottom.toDouble())
        }) ?: return FrameResult(DoubleArray(0), DoubleArray(0), uprightWidth, uprightHeight, 0.0, msSince(start))

        val modelStart = SystemClock.elapsedRealtimeNanos()
        val plane = image.planes[0]
        val frame = RgbImage.fromRgba(plane.buffer, image.width, image.height, plane.rowStride, plane.pixelStride)
        // every pass of the manifest's refinement (infer: flip, passes) calls the model
        val points = pipeline.landmarks(frame, rotation, box, LandmarkPipeline.Model { crop -> model.run(crop) },
            model.artifact.outputsCropPixels)
        val pupils = Postprocess.pupilCentres(points, model.contract.pupils)
        return FrameResult(points, pupils, uprightWidth, uprightHeight, msSince(modelStart), msSince(start))
    }

    override fun close() {
        replaceModel(null)
        detector.close()
    }

    private companion object {
        const val TAG = "facemark"
        const val MIN_FACE_SIZE = 0.15f   // of the frame width: ignore small background faces

        fun msSince(startNanos: Long): Double = (SystemClock.elapsedRealtimeNanos() - startNanos) / 1e6
    }
}
