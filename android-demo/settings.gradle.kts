// The Android demo app, with Hearth's library module (../bindings/kotlin) as
// `:hearth`. Open this directory in Android Studio (or run Gradle 8.9+ here):
// the `:hearth` module's cargoBuild task builds libhearth for the four ABIs
// with cargo-ndk and generates the Kotlin bindings before every build.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
    plugins {
        // The same versions as bindings/kotlin/settings.gradle.kts.
        id("com.android.application") version "8.7.3"
        id("com.android.library") version "8.7.3"
        id("org.jetbrains.kotlin.android") version "2.1.0"
        id("org.jetbrains.kotlin.plugin.compose") version "2.1.0"
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "hearth-demo"

include(":app")
include(":hearth")
project(":hearth").projectDir = file("../bindings/kotlin")
