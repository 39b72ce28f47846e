//! Renders a raw QR string as the `data:image/png;base64,...` URL Laravel stores.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;

/// QR codes rendered by this process (`wasup_qr_renders_total`): each QR is rendered once at
/// most, so this stays at or below the QRs forwarded plus those only asked for through the API.
static RENDERS: AtomicU64 = AtomicU64::new(0);
/// The data URL's prefix before the base64 PNG.
const DATA_URL_PREFIX: &str = "data:image/png;base64,";

/// Pixels per QR module: large enough to scan from a screen (pages scale it up further).
const PIXELS_PER_MODULE: usize = 5;
/// White modules around the code, as the QR standard asks.
const QUIET_ZONE_MODULES: usize = 4;

/// Why a QR could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum QrImageError {
    /// The text does not fit in a QR code.
    #[error("cannot encode the QR text: {0}")]
    Encode(String),
    /// PNG encoding failed.
    #[error("cannot write the QR PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// Encodes `text` as a black-on-white PNG and returns it as a data URL.
pub fn qr_data_url(text: &str) -> Result<String, QrImageError> {
    let png = qr_png(text)?;
    let mut url = String::with_capacity(DATA_URL_PREFIX.len() + png.len() * 4 / 3 + 4);
    url.push_str(DATA_URL_PREFIX);
    base64::engine::general_purpose::STANDARD.encode_string(&png, &mut url);
    Ok(url)
}

/// Encodes `text` as a black-on-white grayscale PNG, 1 bit per pixel (about 1 KB).
pub fn qr_png(text: &str) -> Result<Vec<u8>, QrImageError> {
    RENDERS.fetch_add(1, Ordering::Relaxed);
    let code = fast_qr::QRBuilder::new(text.as_bytes())
        .ecl(fast_qr::ECL::L)
        .build()
        .map_err(|error| QrImageError::Encode(format!("{error:?}")))?;
    let modules = code.size;
    let side = (modules + 2 * QUIET_ZONE_MODULES) * PIXELS_PER_MODULE;
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0xffu8; row_bytes * side];
    let mut row = vec![0xffu8; row_bytes];
    for module_y in 0..modules {
        row.fill(0xff);
        for module_x in 0..modules {
            if !code.data[module_y * modules + module_x].value() {
                continue;
            }
            let x0 = (module_x + QUIET_ZONE_MODULES) * PIXELS_PER_MODULE;
            for x in x0..x0 + PIXELS_PER_MODULE {
                row[x / 8] &= !(0x80 >> (x % 8));
            }
        }
        let y0 = (module_y + QUIET_ZONE_MODULES) * PIXELS_PER_MODULE;
        for y in y0..y0 + PIXELS_PER_MODULE {
            pixels[y * row_bytes..(y + 1) * row_bytes].copy_from_slice(&row);
        }
    }
    let side_u32 = u32::try_from(side).unwrap_or(u32::MAX);
    let mut png_bytes = Vec::with_capacity(1536);
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, side_u32, side_u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        encoder.set_compression(png::Compression::Default);
        // Row filters do nothing for a two-colour bitmap but cost most of the encoding time.
        encoder.set_filter(png::FilterType::NoFilter);
        encoder.set_adaptive_filter(png::AdaptiveFilterType::NonAdaptive);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
    }
    Ok(png_bytes)
}

/// QR codes rendered since start.
pub fn renders_total() -> u64 {
    RENDERS.load(Ordering::Relaxed)
}

/// The PNG inside a data URL made by [`qr_data_url`] (decoding is far cheaper than rendering).
pub fn png_of_data_url(url: &str) -> Option<Vec<u8>> {
    let encoded = url.strip_prefix(DATA_URL_PREFIX)?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_png_data_url() {
        let url = qr_data_url("2@abc,def,ghi,jkl").expect("renders");
        let encoded = url.strip_prefix("data:image/png;base64,").expect("prefix");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() < 1500, "a QR PNG stays small: {}", bytes.len());
    }

    #[test]
    fn a_whatsapp_sized_qr_decodes_to_black_and_white_modules() {
        let text = format!(
            "2@{},{},{},{}",
            "A".repeat(64),
            "B".repeat(44),
            "C".repeat(44),
            "D".repeat(44)
        );
        let png = qr_png(&text).expect("renders");
        assert!(png.len() < 1500, "{} bytes", png.len());
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().expect("valid PNG");
        let info = reader.info();
        assert_eq!(
            (info.bit_depth, info.color_type),
            (png::BitDepth::One, png::ColorType::Grayscale)
        );
        let side = info.width as usize;
        let mut buffer = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buffer).expect("pixels");
        let pixel =
            |x: usize, y: usize| buffer[y * side.div_ceil(8) + x / 8] & (0x80 >> (x % 8)) != 0;
        let quiet = QUIET_ZONE_MODULES * PIXELS_PER_MODULE;
        assert!(pixel(0, 0), "the quiet zone is white");
        assert!(!pixel(quiet, quiet), "the finder pattern's corner is black");
    }

    #[test]
    fn different_texts_give_different_images() {
        assert_ne!(qr_data_url("a").ok(), qr_data_url("b").ok());
    }
}
