//! A line chart as a PNG, drawn here: a pixel buffer, lines, a 5x7 bitmap
//! font (capital letters, digits and a few signs) and a palette PNG whose
//! image data is compressed by `miniz_oxide`. No system library (no font
//! or image library) is involved, and the only dependency is that pure-Rust
//! deflate.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// (x, y), drawn in this order.
    pub points: Vec<(f64, f64)>,
    /// Dashed (for reference levels) or solid.
    pub dashed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Room for legend labels of about 34 characters right of the plot.
const WIDTH: usize = 1180;
const HEIGHT: usize = 580;
/// The plot area.
const LEFT: usize = 90;
const RIGHT: usize = 700;
const TOP: usize = 70;
const BOTTOM: usize = 510;
/// Font scale: 5x7 glyphs drawn at 2x.
const SCALE: usize = 2;
const GLYPH_W: usize = 6 * SCALE;

/// Palette: background, ink, grid, then the series colours.
const PALETTE: [[u8; 3]; 13] = [
    [255, 255, 255],
    [30, 30, 30],
    [225, 225, 225],
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];
const BACKGROUND: u8 = 0;
const INK: u8 = 1;
const GRID: u8 = 2;

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas { pixels: vec![BACKGROUND; WIDTH * HEIGHT] }
    }

    fn set(&mut self, x: i64, y: i64, colour: u8) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            self.pixels[y as usize * WIDTH + x as usize] = colour;
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, colour: u8) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, colour);
            }
        }
    }

    /// A line `width` pixels thick; dashed lines draw 8 pixels of every 14.
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), colour: u8, width: i64, dashed: bool) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
        let r = width / 2;
        for i in 0..=steps {
            if dashed && i % 14 >= 8 {
                continue;
            }
            let t = i as f64 / steps as f64;
            let x = (x0 + t * (x1 - x0)).round() as i64;
            let y = (y0 + t * (y1 - y0)).round() as i64;
            self.rect(x - r, y - r, x - r + width - 1, y - r + width - 1, colour);
        }
    }

    fn text(&mut self, x: usize, y: usize, text: &str, colour: u8) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (dy, bits) in rows.iter().enumerate() {
                for dx in 0..5 {
                    if bits & (0x10 >> dx) != 0 {
                        let px = (x + i * GLYPH_W + dx * SCALE) as i64;
                        let py = (y + dy * SCALE) as i64;
                        self.rect(px, py, px + SCALE as i64 - 1, py + SCALE as i64 - 1, colour);
                    }
                }
            }
        }
    }

    fn text_width(text: &str) -> usize {
        text.chars().count() * GLYPH_W
    }
}

/// Round steps (1, 2 or 5 times a power of ten) from `lo` to at least `hi`,
/// about `target` of them.
fn ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    let span = (hi - lo).max(1e-12);
    let raw = span / target.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(10.0 * power);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        let v = first + k as f64 * step;
        out.push(v);
        if v >= hi - 1e-12 {
            break;
        }
        k += 1;
    }
    (out, decimals)
}

impl Chart {
    /// Draws the chart and writes it to `path` as a PNG.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        let png = self.render()?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The PNG bytes.
    pub fn render(&self) -> Result<Vec<u8>> {
        let points = self.series.iter().flat_map(|s| &s.points);
        if points.clone().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
            bail!("a chart point is not finite");
        }
        if points.clone().next().is_none() {
            bail!("nothing to chart");
        }
        let x_max = points.clone().map(|p| p.0).fold(f64::MIN, f64::max);
        let x_min = points.clone().map(|p| p.0).fold(f64::MAX, f64::min).min(0.0);
        let y_max = points.clone().map(|p| p.1).fold(f64::MIN, f64::max);
        let y_min = points.clone().map(|p| p.1).fold(f64::MAX, f64::min).min(0.0);
        let (mut xt, mut xd) = ticks(x_min, x_max.max(x_min + 1.0), 10);
        if points.clone().all(|p| p.0.fract() == 0.0) && xt.len() > 1 && xt[1] - xt[0] < 1.0 {
            // Whole numbers (rounds) get whole ticks.
            xt = (x_min as i64..=x_max.ceil().max(x_min + 1.0) as i64).map(|x| x as f64).collect();
            xd = 0;
        }
        let (yt, yd) = ticks(y_min, y_max.max(y_min + 1e-6) * 1.05, 6);
        let (x0, x1) = (xt[0], xt[xt.len() - 1]);
        let (y0, y1) = (yt[0], yt[yt.len() - 1]);
        let px = |x: f64| LEFT as f64 + (x - x0) / (x1 - x0) * (RIGHT - LEFT) as f64;
        let py = |y: f64| BOTTOM as f64 - (y - y0) / (y1 - y0) * (BOTTOM - TOP) as f64;

        let mut c = Canvas::new();
        for &y in &yt {
            let row = py(y);
            c.line((LEFT as f64, row), (RIGHT as f64, row), GRID, 1, false);
            let label = format!("{y:.yd$}");
            let w = Canvas::text_width(&label);
            c.text(LEFT - 8 - w, row as usize - 7, &label, INK);
        }
        for &x in &xt {
            let col = px(x);
            c.line((col, TOP as f64), (col, BOTTOM as f64), GRID, 1, false);
            let label = format!("{x:.xd$}");
            let w = Canvas::text_width(&label);
            c.text((col as usize).saturating_sub(w / 2), BOTTOM + 10, &label, INK);
        }
        c.line((LEFT as f64, TOP as f64), (LEFT as f64, BOTTOM as f64), INK, 2, false);
        c.line((LEFT as f64, BOTTOM as f64), (RIGHT as f64, BOTTOM as f64), INK, 2, false);
        c.text(LEFT, 12, &self.title.to_uppercase(), INK);
        let xl = self.x_label.to_uppercase();
        c.text((LEFT + RIGHT) / 2 - Canvas::text_width(&xl) / 2, BOTTOM + 38, &xl, INK);
        c.text(8, TOP - 26, &self.y_label.to_uppercase(), INK);

        let legend_x = RIGHT + 24;
        for (i, s) in self.series.iter().enumerate() {
            let colour = 3 + (i % (PALETTE.len() - 3)) as u8;
            for w in s.points.windows(2) {
                c.line((px(w[0].0), py(w[0].1)), (px(w[1].0), py(w[1].1)), colour, 3, s.dashed);
            }
            if s.points.len() == 1 {
                let (x, y) = (px(s.points[0].0) as i64, py(s.points[0].1) as i64);
                c.rect(x - 3, y - 3, x + 3, y + 3, colour);
            }
            let ly = TOP + 10 + i * 30;
            c.line((legend_x as f64, ly as f64 + 7.0), (legend_x as f64 + 36.0, ly as f64 + 7.0), colour, 3, s.dashed);
            let label = s.label.to_uppercase();
            c.text(legend_x + 46, ly, &label, INK);
        }
        encode_png(&c.pixels, WIDTH, HEIGHT)
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// An 8-bit palette PNG of `pixels` (palette indices, row by row).
fn encode_png(pixels: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
    if pixels.len() != width * height {
        bail!("{} pixels for {width}x{height}", pixels.len());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    // Bit depth 8, colour type 3 (palette), deflate, no filter method, no interlace.
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"PLTE", &PALETTE.concat());
    let mut raw = Vec::with_capacity((width + 1) * height);
    for row in pixels.chunks_exact(width) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    chunk(&mut out, b"IDAT", &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 9));
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// The 5x7 rows of `c` (bit 4 is the leftmost column); lower case is drawn
/// as upper case, anything unknown as `?`.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        ' ' => [0; 7],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        ';' => [0, 0x0C, 0x0C, 0, 0x0C, 0x04, 0x08],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '@' => [0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '\'' => [0x04, 0x04, 0x08, 0, 0, 0, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '*' => [0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_png_reference() {
        // The CRC of an IEND chunk (type only) is fixed by the format.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_chart_is_a_well_formed_png() {
        let chart = Chart {
            title: "NDCG@10 by round".into(),
            x_label: "round".into(),
            y_label: "NDCG@10".into(),
            series: vec![
                Series {
                    label: "federated, no noise".into(),
                    points: vec![(0.0, 0.02), (1.0, 0.03), (2.0, 0.05)],
                    dashed: false,
                },
                Series { label: "popularity".into(), points: vec![(0.0, 0.025), (2.0, 0.025)], dashed: true },
            ],
        };
        let png = chart.render().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), WIDTH as u32);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
        // Walk the chunks: each length, type and CRC holds; inflate the image.
        let mut at = 8;
        let mut idat = Vec::new();
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let body = &png[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32(body), crc);
            if &body[..4] == b"IDAT" {
                idat.extend_from_slice(&body[4..]);
            }
            at += 12 + len;
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).unwrap();
        assert_eq!(raw.len(), (WIDTH + 1) * HEIGHT);
        // Both series' colours are drawn.
        assert!(raw.contains(&3) && raw.contains(&4));
        assert!(png.len() < 60_000, "{} bytes", png.len());
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (t, d) = ticks(0.0, 0.0632, 6);
        assert_eq!(d, 2);
        assert!(t[0] == 0.0 && *t.last().unwrap() >= 0.0632);
        let (t, d) = ticks(0.0, 30.0, 10);
        assert_eq!(d, 0);
        assert_eq!(t, [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
        assert!(glyph('z') == glyph('Z') && glyph('\u{1F600}') == glyph('?'));
    }

    #[test]
    fn nothing_to_chart_is_an_error() {
        let chart = Chart { title: String::new(), x_label: String::new(), y_label: String::new(), series: vec![] };
        assert!(chart.render().is_err());
    }
}
