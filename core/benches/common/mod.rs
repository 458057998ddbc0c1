//! Shared by the benchmarks: a store opened with a fixed key and a catalog
//! of `n` items over eight genres.

use std::sync::Arc;

use hearth_core::*;

/// A fresh store in `dir`.
pub fn open_store(dir: &std::path::Path) -> Arc<Hearth> {
    Hearth::open(HearthConfig::new(dir.to_str().unwrap()), Arc::new(FixedKeyProvider::new([7; 32]))).unwrap()
}

/// `catalog-item-0` .. `catalog-item-{n-1}`, two genres each, a third in
/// French, popularity cycling 0 to 96.
pub fn catalog(n: usize) -> Vec<CatalogItem> {
    let genres = ["drama", "comedy", "thriller", "kids", "sport", "news", "documentary", "music"];
    (0..n)
        .map(|i| CatalogItem {
            id: format!("catalog-item-{i}"),
            title: format!("Title {i}"),
            categories: vec![genres[i % 8].into(), genres[(i / 8) % 8].into()],
            language: Some(if i % 3 == 0 { "fr" } else { "en" }.into()),
            duration_ms: Some(2_700_000),
            release_year: Some(1990 + (i % 36) as u16),
            popularity: (i % 97) as f64,
            content_rating: None,
        })
        .collect()
}
