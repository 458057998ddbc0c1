// The demo's catalog: what a media app's backend would send down (public
// metadata, no user data). Plain Kotlin, shared with the console twin.
package org.hearth.demo.model

import org.hearth.CatalogItem
import java.util.Calendar
import java.util.TimeZone

/** The current year in UTC (java.util, so it runs on API 24 without desugaring). */
val THIS_YEAR: UShort = Calendar.getInstance(TimeZone.getTimeZone("UTC")).get(Calendar.YEAR).toUShort()

private fun media(id: String, title: String, language: String, year: UShort, popularity: Double, vararg categories: String) =
    CatalogItem(
        id = id,
        title = title,
        categories = categories.toList(),
        language = language,
        durationMs = 5_400_000uL,
        releaseYear = year,
        popularity = popularity,
        contentRating = "PG",
    )

/** Twenty items, eight categories, three languages. */
val DEMO_CATALOG: List<CatalogItem> = listOf(
    media("d1", "Harbor Lights", "en", 2019u, 40.0, "drama"),
    media("d2", "Quiet Rooms", "en", 2021u, 30.0, "drama"),
    media("d3", "Long Winter", "fr", 2018u, 20.0, "drama"),
    media("d4", "The Glass Orchard", "en", THIS_YEAR, 31.0, "drama"),
    media("d5", "Mar de Fondo", "es", 2016u, 21.0, "drama"),
    media("m1", "Night Shift", "en", 2020u, 33.0, "drama", "crime"),
    media("m2", "Cold Case Files", "en", 2022u, 26.0, "crime"),
    media("c1", "Laugh Track", "en", 2019u, 35.0, "comedy"),
    media("c2", "Office Hours", "fr", 2017u, 25.0, "comedy"),
    media("c3", "Second Helpings", "en", THIS_YEAR, 12.0, "comedy"),
    media("s1", "Goal Rush", "en", 2023u, 50.0, "sports"),
    media("s2", "Final Lap", "en", 2021u, 15.0, "sports"),
    media("n1", "Evening Brief", "en", 2024u, 10.0, "news"),
    media("n2", "Le Journal", "fr", 2024u, 12.0, "news"),
    media("h1", "Night Terror", "en", 2019u, 60.0, "horror"),
    media("h2", "The Cellar", "en", 2016u, 45.0, "horror", "crime"),
    media("k1", "Tiny Dragons", "en", 2020u, 22.0, "kids"),
    media("k2", "Paper Boats", "fr", 2015u, 18.0, "kids"),
    media("o1", "Deep Blue", "en", 2018u, 28.0, "documentary"),
    media("o2", "Stone Age", "fr", 2014u, 16.0, "documentary"),
)
