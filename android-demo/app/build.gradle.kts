// The Hearth demo app: Jetpack Compose, WorkManager, and Hearth (`:hearth`,
// the library module in ../bindings/kotlin, which brings libhearth for the
// four ABIs and JNA).

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

val coordinatorUrl = (findProperty("hearthCoordinatorUrl") as String?).orEmpty()
require(coordinatorUrl.isEmpty() || coordinatorUrl.startsWith("https://")) { "hearthCoordinatorUrl must be https://" }

android {
    namespace = "org.hearth.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.hearth.demo"
        minSdk = 24 // the :hearth module's
        targetSdk = 35
        versionCode = 1
        versionName = "0.1"
        buildConfigField("String", "HEARTH_COORDINATOR_URL", "\"$coordinatorUrl\"")
    }

    buildTypes {
        release {
            // Not shrunk: simpler to debug for a demo. With isMinifyEnabled the
            // :hearth module's consumer rules keep what JNA and UniFFI need.
            isMinifyEnabled = false
            signingConfig = signingConfigs.getByName("debug") // a demo: sign with the debug key
        }
    }

    buildFeatures {
        compose = true
        buildConfig = true
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17)
    }
}

dependencies {
    implementation(project(":hearth"))

    implementation(platform("androidx.compose:compose-bom:2024.12.01"))
    implementation("androidx.compose.material3:material3")
    implementation("androidx.compose.material:material-icons-core")
    implementation("androidx.compose.ui:ui")
    implementation("androidx.compose.ui:ui-tooling-preview")
    debugImplementation("androidx.compose.ui:ui-tooling")

    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.core:core-ktx:1.15.0") // FileProvider, for sharing the export
    implementation("androidx.lifecycle:lifecycle-viewmodel-compose:2.8.7")
    implementation("androidx.lifecycle:lifecycle-runtime-compose:2.8.7")
    implementation("androidx.work:work-runtime-ktx:2.10.0")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}
