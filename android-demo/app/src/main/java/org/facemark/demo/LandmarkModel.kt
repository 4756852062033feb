package org.facemark.demo

import android.content.Context
import android.content.res.AssetManager
import org.facemark.core.AppDefaults
import org.facemark.core.ModelContract
import org.facemark.core.Postprocess
import org.facemark.core.Preprocess
import org.facemark.core.TensorSpec
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/**
 * The exported model and its manifest, read from the app's assets and run with the LiteRT
 * Interpreter: CPU with XNNPACK by default, the GPU delegate when asked and supported.
 *
 * Create, run and close it on one thread (the GPU delegate is bound to the thread that made it).
 */
class LandmarkModel private constructor(
    val contract: ModelContract,
    val artifact: ModelContract.Artifact,
    private val interpreter: Interpreter,
    private val gpuDelegate: GpuDelegate?,
    /** Why the GPU was asked for but not used, or null. */
    val gpuFallbackReason: String?,
) : AutoCloseable {
    val usesGpu: Boolean get() = gpuDelegate != null

    private val inputTensor: Tensor = interpreter.getInputTensor(0)
    private val outputTensor: Tensor = interpreter.getOutputTensor(0)
    private val inputSpec = specOf(inputTensor, layoutOf(inputTensor.shape(), contract.inputSize, artifact.file))
    private val outputSpec = specOf(outputTensor, "NHWC")
    private val input = ByteBuffer.allocateDirect(inputTensor.numBytes()).order(ByteOrder.nativeOrder())
    private val output = ByteBuffer.allocateDirect(outputTensor.numBytes()).order(ByteOrder.nativeOrder())

    init {
        require(outputTensor.numElements() == 2 * contract.numPoints) {
            "${artifact.file}: ${outputTensor.numElements()} outputs, but the manifest's scheme " +
                "${contract.schemeName} has ${contract.numPoints} points (2P = ${2 * contract.numPoints})"
        }
    }

    /** One S*S*3 RGB crop -> 2P outputs: normalised crop units, or crop pixels (artifact.outputsCropPixels). */
    fun run(crop: ByteArray): FloatArray {
        Preprocess.fill(crop, contract.inputSize, contract, artifact.bakedPreprocessing, inputSpec, input)
        output.rewind()
        interpreter.run(input, output)
        return Postprocess.read(output, outputSpec, outputTensor.numElements())
    }

    override fun close() {
        interpreter.close()
        gpuDelegate?.close()
    }

    companion object {
        /** Load manifest.json and the model it lists from the assets; errors name the missing file. */
        fun load(context: Context, threads: Int, useGpu: Boolean): LandmarkModel {
            val assets = context.assets
            val contract = assets.open(AppDefaults.MANIFEST_ASSET).bufferedReader().use {
                ModelContract.fromManifestJson(it.readText())
            }
            val present = assets.list("").orEmpty().toList()
            val artifact = contract.chooseTflite(present, AppDefaults.MODEL_ASSET)
                ?: error("no .tflite listed in ${AppDefaults.MANIFEST_ASSET} is in the app's assets (found: $present)")
            val model = mapAsset(assets, artifact.file)
            if (useGpu) {
                val (delegate, reason) = gpuDelegate()
                if (delegate != null) {
                    try {
                        val options = Interpreter.Options().addDelegate(delegate)
                        return LandmarkModel(contract, artifact, Interpreter(model, options), delegate, null)
                    } catch (e: IllegalArgumentException) {  // the delegate rejected the graph
                        delegate.close()
                        return cpu(contract, artifact, model, threads, e.message ?: "delegate failed")
                    }
                }
                return cpu(contract, artifact, model, threads, reason)
            }
            return cpu(contract, artifact, model, threads, null)
        }

        private fun cpu(
            contract: ModelContract, artifact: ModelContract.Artifact, model: MappedByteBuffer,
            threads: Int, gpuFallbackReason: String?,
        ): LandmarkModel {
            val options = Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true)
            return LandmarkModel(contract, artifact, Interpreter(model, options), null, gpuFallbackReason)
        }

        private fun gpuDelegate(): Pair<GpuDelegate?, String?> {
            val compatibility = CompatibilityList()
            try {
                if (!compatibility.isDelegateSupportedOnThisDevice) {
                    return null to "not supported on this device"
                }
                return GpuDelegate(compatibility.bestOptionsForThisDevice) to null
            } finally {
                compatibility.close()
            }
        }

        private fun mapAsset(assets: AssetManager, name: String): MappedByteBuffer =
            assets.openFd(name).use { fd ->
                FileInputStream(fd.fileDescriptor).channel.use { channel ->
                    channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
                }
            }

        private fun layoutOf(shape: IntArray, size: Int, file: String): String = when {
            shape.contentEquals(intArrayOf(1, size, size, 3)) -> "NHWC"
            shape.contentEquals(intArrayOf(1, 3, size, size)) -> "NCHW"
            else -> error("$file: input shape ${shape.contentToString()} does not fit the manifest's $size x $size RGB")
        }

        private fun specOf(tensor: Tensor, layout: String): TensorSpec {
            val dtype = when (tensor.dataType()) {
                DataType.FLOAT32 -> TensorSpec.DType.FLOAT32
                DataType.UINT8 -> TensorSpec.DType.UINT8
                DataType.INT8 -> TensorSpec.DType.INT8
                else -> error("tensor ${tensor.name()}: type ${tensor.dataType()} is not supported")
            }
            val quantization = tensor.quantizationParams()
            return TensorSpec(dtype, layout, quantization.scale, quantization.zeroPoint)
        }
    }
}
