package org.facemark.demo

import android.Manifest
import android.content.pm.PackageManager
import android.os.Bundle
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.CheckBox
import android.widget.Spinner
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.AspectRatioStrategy
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import org.facemark.core.AppDefaults
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Front camera preview with the model's landmarks drawn on top and the time per frame.
 * Settings (bottom bar): interpreter threads and the GPU delegate; changing one reloads the model.
 */
class MainActivity : ComponentActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private lateinit var settings: Settings
    // one thread for the model and the analyzer: frames, reloads and the GPU delegate never overlap
    private val analysisExecutor: ExecutorService = Executors.newSingleThreadExecutor()
    private val analyzer by lazy { LandmarkAnalyzer { result -> runOnUiThread { showResult(result) } } }
    @Volatile private var modelLabel = ""

    private val cameraPermission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else status.setText(R.string.camera_denied)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        overlay = findViewById(R.id.overlay)
        status = findViewById(R.id.status)
        settings = Settings(this)
        previewView.scaleType = PreviewView.ScaleType.FILL_CENTER
        overlay.mirror = true  // front camera
        setUpSettingsBar()
        reloadModel()
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            cameraPermission.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.execute { analyzer.close() }
        analysisExecutor.shutdown()
    }

    private fun setUpSettingsBar() {
        val choices = AppDefaults.THREAD_CHOICES.toList()
        val threads: Spinner = findViewById(R.id.threads)
        threads.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item,
            choices.map { getString(R.string.threads_label, it) })
        threads.setSelection(choices.indexOf(settings.threads).coerceAtLeast(0))
        threads.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                if (choices[position] != settings.threads) {
                    settings.threads = choices[position]
                    reloadModel()
                }
            }

            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        val gpu: CheckBox = findViewById(R.id.gpu)
        gpu.isChecked = settings.useGpu
        gpu.setOnCheckedChangeListener { _, checked ->
            settings.useGpu = checked
            reloadModel()
        }
    }

    /** (Re)load the model with the current settings, on the analysis thread. */
    private fun reloadModel() {
        val threads = settings.threads
        val useGpu = settings.useGpu
        status.setText(R.string.loading)
        analysisExecutor.execute {
            val model = try {
                LandmarkModel.load(applicationContext, threads, useGpu)
            } catch (e: Exception) {
                runOnUiThread { status.text = getString(R.string.model_error, e.message) }
                null
            }
            analyzer.replaceModel(model)
            if (model != null) {
                var backend = if (model.usesGpu) {
                    getString(R.string.backend_gpu)
                } else {
                    getString(R.string.backend_cpu, threads)
                }
                model.gpuFallbackReason?.let { backend += " " + getString(R.string.gpu_fallback, it) }
                modelLabel = "${model.contract.schemeName} · ${model.artifact.file} · $backend"
                runOnUiThread { overlay.setPupilGroups(model.contract.pupils) }
            }
        }
    }

    private fun startCamera() {
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({
            val provider = providerFuture.get()
            // preview and analysis both 4:3, so both show the sensor's full field of view and the
            // overlay's FILL_CENTER mapping of the analysis frame lines up with the preview
            val resolution = ResolutionSelector.Builder()
                .setAspectRatioStrategy(AspectRatioStrategy.RATIO_4_3_FALLBACK_AUTO_STRATEGY)
                .build()
            val preview = Preview.Builder().setResolutionSelector(resolution).build()
            preview.setSurfaceProvider(previewView.surfaceProvider)
            val analysis = ImageAnalysis.Builder()
                .setResolutionSelector(resolution)
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(analysisExecutor, analyzer)
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_FRONT_CAMERA, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    private fun showResult(result: FrameResult) {
        overlay.show(result)
        status.text = if (result.points.isEmpty()) {
            getString(R.string.status_no_face, modelLabel, result.frameMs)
        } else {
            getString(R.string.status_face, modelLabel, result.modelMs, result.frameMs)
        }
    }
}
