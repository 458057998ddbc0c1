// Hearth's Android library, as a build of its own. An app can also include
// it as a module: `include(":hearth")` and
// `project(":hearth").projectDir = file("<repo>/bindings/kotlin")` in the
// app's settings, whose pluginManagement then supplies the plugin versions.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
    plugins {
        id("com.android.library") version "8.7.3"
        id("org.jetbrains.kotlin.android") version "2.1.0"
    }
}

dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "hearth"
