// The demo's catalog: what a media app's backend would send down (public
// metadata, no user data). Foundation only: shared with the console twin.
import Foundation
import Hearth

/// The current year in UTC.
public let thisYear: UInt16 = {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    return UInt16(calendar.component(.year, from: Date()))
}()

private func media(
    _ id: String, _ title: String, _ language: String, _ year: UInt16, _ popularity: Double, _ categories: [String]
) -> CatalogItem {
    CatalogItem(
        id: id, title: title, categories: categories, language: language, durationMs: 5_400_000, releaseYear: year,
        popularity: popularity, contentRating: "PG")
}

/// Twenty items, eight categories, three languages.
public let demoCatalog: [CatalogItem] = [
    media("d1", "Harbor Lights", "en", 2019, 40, ["drama"]),
    media("d2", "Quiet Rooms", "en", 2021, 30, ["drama"]),
    media("d3", "Long Winter", "fr", 2018, 20, ["drama"]),
    media("d4", "The Glass Orchard", "en", thisYear, 31, ["drama"]),
    media("d5", "Mar de Fondo", "es", 2016, 21, ["drama"]),
    media("m1", "Night Shift", "en", 2020, 33, ["drama", "crime"]),
    media("m2", "Cold Case Files", "en", 2022, 26, ["crime"]),
    media("c1", "Laugh Track", "en", 2019, 35, ["comedy"]),
    media("c2", "Office Hours", "fr", 2017, 25, ["comedy"]),
    media("c3", "Second Helpings", "en", thisYear, 12, ["comedy"]),
    media("s1", "Goal Rush", "en", 2023, 50, ["sports"]),
    media("s2", "Final Lap", "en", 2021, 15, ["sports"]),
    media("n1", "Evening Brief", "en", 2024, 10, ["news"]),
    media("n2", "Le Journal", "fr", 2024, 12, ["news"]),
    media("h1", "Night Terror", "en", 2019, 60, ["horror"]),
    media("h2", "The Cellar", "en", 2016, 45, ["horror", "crime"]),
    media("k1", "Tiny Dragons", "en", 2020, 22, ["kids"]),
    media("k2", "Paper Boats", "fr", 2015, 18, ["kids"]),
    media("o1", "Deep Blue", "en", 2018, 28, ["documentary"]),
    media("o2", "Stone Age", "fr", 2014, 16, ["documentary"]),
]
