// facemark Android demo: the camera app (:app) and its plain-JVM pre/post-processing (:core).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()        // AndroidX, CameraX, ML Kit, LiteRT
        mavenCentral()
    }
}

rootProject.name = "facemark-android-demo"
include(":app", ":core")
