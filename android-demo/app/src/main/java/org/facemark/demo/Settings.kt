package org.facemark.demo

import android.content.Context
import org.facemark.core.AppDefaults

/** The user's two settings, kept across launches: interpreter threads and the GPU delegate. */
class Settings(context: Context) {
    private val prefs = context.getSharedPreferences("facemark", Context.MODE_PRIVATE)

    var threads: Int
        get() = prefs.getInt(KEY_THREADS, AppDefaults.DEFAULT_THREADS)
        set(value) = prefs.edit().putInt(KEY_THREADS, value).apply()

    var useGpu: Boolean
        get() = prefs.getBoolean(KEY_GPU, AppDefaults.DEFAULT_USE_GPU)
        set(value) = prefs.edit().putBoolean(KEY_GPU, value).apply()

    private companion object {
        const val KEY_THREADS = "threads"
        const val KEY_GPU = "use_gpu"
    }
}
