package org.facemark.demo

import android.content.Context
import android.graphics.Canvas
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View
import androidx.core.content.ContextCompat
import org.facemark.core.LandmarkPipeline

/**
 * Draws the landmarks of the latest frame over the camera preview: every point in green, the
 * points of the scheme's pupil groups in red, and a ring at each pupil centre (the group mean,
 * which is how schemes without pupil points such as ibug68 define a pupil).
 */
class OverlayView(context: Context, attrs: AttributeSet?) : View(context, attrs) {
    /** The front camera's preview is a mirror image, so the points are mirrored too. */
    var mirror: Boolean = true
    private var result: FrameResult? = null
    private var pupilIndices: Set<Int> = emptySet()
    private val density = resources.displayMetrics.density
    private val pointPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = ContextCompat.getColor(context, R.color.landmark)
        style = Paint.Style.FILL
    }
    private val pupilPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = ContextCompat.getColor(context, R.color.pupil)
        style = Paint.Style.FILL
    }
    private val ringPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = ContextCompat.getColor(context, R.color.pupil)
        style = Paint.Style.STROKE
        strokeWidth = 2f * density
    }

    /** The scheme's two pupil index groups (manifest scheme.pupils). */
    fun setPupilGroups(groups: Array<IntArray>) {
        pupilIndices = groups.flatMap { it.asList() }.toSet()
    }

    /** Show a frame's result; null or an empty result draws nothing. */
    fun show(next: FrameResult?) {
        result = next
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val frame = result ?: return
        if (frame.points.isEmpty() || width == 0 || height == 0) return
        val toView = { points: DoubleArray ->
            LandmarkPipeline.toView(points, frame.uprightWidth, frame.uprightHeight, width, height, mirror)
        }
        val points = toView(frame.points)
        // core uses pixel centres at integers; Canvas pixel i spans [i, i + 1], so its centre is i + 0.5
        for (i in 0 until points.size / 2) {
            val pupil = i in pupilIndices
            canvas.drawCircle(points[2 * i].toFloat() + 0.5f, points[2 * i + 1].toFloat() + 0.5f,
                (if (pupil) 3f else 2f) * density, if (pupil) pupilPaint else pointPaint)
        }
        val pupils = toView(frame.pupils)
        for (i in 0 until 2) {
            val x = pupils[2 * i].toFloat() + 0.5f
            val y = pupils[2 * i + 1].toFloat() + 0.5f
            canvas.drawCircle(x, y, 6f * density, ringPaint)
        }
    }
}
