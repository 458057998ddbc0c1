// org.hearth: the Kotlin API of libhearth, as an Android library (AAR).
//
// What goes in the AAR, both made by ../build-android.sh (task cargoBuild,
// run before every build) and never committed:
//   - src/main/jniLibs/<abi>/libhearth.so for arm64-v8a, armeabi-v7a, x86_64, x86;
//   - build/generated/source/uniffi/org/hearth/hearth.kt, the UniFFI bindings.
// The JVM tests in src/test/kotlin run against a host build of libhearth
// (`cargo build -p hearth-ffi`, which build-android.sh also makes); on the
// project's test machines tests/bindings/run.sh runs them with kotlinc.

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

val generatedKotlin = layout.buildDirectory.dir("generated/source/uniffi")
val jniLibsDir = file("src/main/jniLibs")
val repoDir = projectDir.resolve("../..").canonicalFile
val hostTargetDir = System.getenv("CARGO_TARGET_DIR")?.let(::File) ?: repoDir.resolve("target")

android {
    namespace = "org.hearth"
    compileSdk = 35
    // cargo-ndk builds with this NDK (ANDROID_NDK_HOME is set from it).
    ndkVersion = "27.2.12479018"

    defaultConfig {
        minSdk = 24 // HEARTH_ANDROID_API in build-android.sh
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets["main"].java.srcDir(generatedKotlin)

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    testOptions.unitTests.all {
        // JNA finds the host build of libhearth here.
        it.systemProperty("jna.library.path", hostTargetDir.resolve("debug").path)
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17)
    }
}

dependencies {
    // UniFFI's generated code calls libhearth through JNA. The AAR carries
    // JNA's own native library for each ABI; the JVM tests use the jar.
    implementation("net.java.dev.jna:jna:5.14.0@aar")
    testImplementation("net.java.dev.jna:jna:5.14.0")
    testImplementation("junit:junit:4.13.2")
    testImplementation(kotlin("test-junit"))
}

val cargoBuild by tasks.registering(Exec::class) {
    description = "Builds libhearth for the Android ABIs and generates the Kotlin bindings."
    workingDir = repoDir
    commandLine("bash", "bindings/build-android.sh")
    environment("HEARTH_JNILIBS_DIR", jniLibsDir.path)
    environment("HEARTH_KOTLIN_OUT", generatedKotlin.get().asFile.path)
    environment("HEARTH_ANDROID_API", android.defaultConfig.minSdk.toString())
    doFirst { environment("ANDROID_NDK_HOME", android.ndkDirectory.path) }
}

tasks.named("preBuild") { dependsOn(cargoBuild) }
