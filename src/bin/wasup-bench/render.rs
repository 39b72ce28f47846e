//! Scenario 6: where a QR rendering's time goes. Times each phase of
//! `wasup_actors::qr_image` (QR modules, bitmap, PNG, base64) over many WhatsApp-shaped QR texts,
//! in this process, on one core.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasup_actors::qr_image;

/// How long one phase took in all, and the PNG bytes made.
#[derive(Default)]
struct Totals {
    modules: Duration,
    bitmap: Duration,
    png: Duration,
    base64: Duration,
    png_bytes: usize,
}

/// Renders `count` distinct QR texts phase by phase; reports µs per QR for each phase.
pub fn render(count: usize) -> anyhow::Result<Value> {
    let mut rng = fastrand::Rng::with_seed(7);
    let texts: Vec<String> = (0..count)
        .map(|_| wasup::engine::simulated::random_qr_text(&mut rng))
        .collect();
    // Warm the caches and the allocator once, uncounted.
    for text in texts.iter().take(50) {
        qr_image::qr_data_url(text)?;
    }
    let mut totals = Totals::default();
    let mut side = 0;
    for text in &texts {
        let started = Instant::now();
        let code = qr_image::qr_modules(text)?;
        let modules_done = Instant::now();
        let bitmap = qr_image::bitmap_of(&code);
        let bitmap_done = Instant::now();
        let png = qr_image::encode_png(&bitmap)?;
        let png_done = Instant::now();
        let url = qr_image::data_url_of_png(&png);
        let url_done = Instant::now();
        std::hint::black_box(&url);
        totals.modules += modules_done - started;
        totals.bitmap += bitmap_done - modules_done;
        totals.png += png_done - bitmap_done;
        totals.base64 += url_done - png_done;
        totals.png_bytes += png.len();
        side = bitmap.side;
    }
    let per_qr = |total: Duration| total.as_secs_f64() * 1e6 / count as f64;
    let all = totals.modules + totals.bitmap + totals.png + totals.base64;
    Ok(json!({
        "qrs": count,
        "text_chars": texts.first().map_or(0, String::len),
        "image_side_px": side,
        "png_bytes_mean": totals.png_bytes / count.max(1),
        "us_per_qr": {
            "modules": per_qr(totals.modules),
            "bitmap": per_qr(totals.bitmap),
            "png": per_qr(totals.png),
            "base64": per_qr(totals.base64),
            "total": per_qr(all),
        },
    }))
}
