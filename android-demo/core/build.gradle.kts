// :core is plain Java with no dependencies: every pre/post-processing step of the app, checked on
// any JDK against golden vectors from the Python pipeline (tests/test_android_core.py runs the same
// classes with javac/java in CI, without Gradle).
plugins {
    `java-library`
}

tasks.withType<JavaCompile>().configureEach {
    options.release.set(11)    // Java 11 language and API: safe for D8 at minSdk 24
    options.compilerArgs.add("-Xlint:all")  // CI (tests/test_android_core.py) adds -Werror
}

// The checks are main() runners (no JUnit: :core has no third-party dependencies), so the empty
// JUnit task is off and `check` runs them instead.
tasks.named<Test>("test") {
    enabled = false
}

val selfTest by tasks.registering(JavaExec::class) {
    description = "Runs CoreSelfTest (rotation, preview mapping, quantised tensors, manifest reader)."
    group = "verification"
    classpath = sourceSets["test"].runtimeClasspath
    mainClass.set("org.facemark.core.CoreSelfTest")
}

val goldenCheck by tasks.registering(JavaExec::class) {
    description = "Checks :core against golden vectors: ./gradlew :core:goldenCheck -Pgolden=../runs/demo/export/golden"
    group = "verification"
    classpath = sourceSets["test"].runtimeClasspath
    mainClass.set("org.facemark.core.GoldenCheck")
    // a relative -Pgolden is taken from android-demo/; the default is `make demo`'s run
    val golden = providers.gradleProperty("golden").orElse("../runs/demo/export/golden")
    args(rootProject.file(golden.get()).absolutePath)
}

tasks.named("check") {
    dependsOn(selfTest)
}
