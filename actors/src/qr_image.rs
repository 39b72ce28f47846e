//! Renders a raw QR string as the `data:image/png;base64,...` URL Laravel stores.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// Compressing the pixels failed.
    #[error("cannot compress the QR pixels: {0}")]
    Deflate(String),
}

/// A rendered QR, kept as its PNG bytes and shown as the `data:image/png;base64,...` URL Laravel
/// stores. Every pending session holds one: as base64 it would be a third larger, so the URL is
/// written out only where a request, a cache write or an API answer is built. Clones share it.
#[derive(Clone, PartialEq, Eq)]
pub struct QrDataUrl(Arc<[u8]>);

impl QrDataUrl {
    /// Renders `text` (counted in [`renders_total`]).
    pub fn render(text: &str) -> Result<Self, QrImageError> {
        Ok(Self::from_png(qr_png(text)?))
    }

    /// The rendering of these PNG bytes.
    pub fn from_png(png: Vec<u8>) -> Self {
        Self(png.into())
    }

    /// The PNG itself (what `GET /sessions/{id}/qr` serves as `image/png`).
    pub fn png(&self) -> &[u8] {
        &self.0
    }

    /// The PNG inside a data URL made by [`QrDataUrl`] or [`qr_data_url`], if it is one.
    pub fn parse(url: &str) -> Option<Self> {
        png_of_data_url(url).map(Self::from_png)
    }
}

impl fmt::Display for QrDataUrl {
    /// The data URL, base64 written straight into the output.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(DATA_URL_PREFIX)?;
        let encoded = base64::display::Base64Display::new(
            &self.0,
            &base64::engine::general_purpose::STANDARD,
        );
        fmt::Display::fmt(&encoded, formatter)
    }
}

impl fmt::Debug for QrDataUrl {
    /// Only the size: a QR is a secret for as long as it lives (logs never show one).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "QrDataUrl({} PNG bytes)", self.0.len())
    }
}

impl Serialize for QrDataUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QrDataUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Self::parse(&url)
            .ok_or_else(|| serde::de::Error::custom("the QR is not a base64 PNG data URL"))
    }
}

/// Encodes `text` as a black-on-white PNG and returns it as a data URL.
pub fn qr_data_url(text: &str) -> Result<String, QrImageError> {
    Ok(data_url_of_png(&qr_png(text)?))
}

/// Encodes `text` as a black-on-white grayscale PNG, 1 bit per pixel (about 1 KB).
pub fn qr_png(text: &str) -> Result<Vec<u8>, QrImageError> {
    RENDERS.fetch_add(1, Ordering::Relaxed);
    let code = qr_modules(text)?;
    encode_png(&bitmap_of(&code))
}

/// The mask every QR gets. QR encoders usually score all eight masks and keep the one with the
/// fewest scanner-confusing patterns, which costs eight times the encoding; WhatsApp's QR text is
/// random keys in base64, where every mask scores about the same, and a fixed one scans as well
/// (the tests decode rendered images with a real decoder).
const MASK: u8 = 0;
/// Deflate level 1: a fifth of the default's time for 20 % more bytes (about 1.2 KB per PNG).
const DEFLATE_LEVEL: i32 = 1;
/// The PNG filter byte for a row stored as is, and for one stored as its difference from the
/// row above (all zeros for a repeated row, which deflate packs into almost nothing).
const FILTER_NONE: u8 = 0;
const FILTER_UP: u8 = 2;

thread_local! {
    /// One deflate compressor per thread, reset between images: a new one costs more (its
    /// tables are zeroed) than compressing a QR.
    static COMPRESSOR: std::cell::RefCell<Box<miniz_oxide::deflate::core::CompressorOxide>> =
        std::cell::RefCell::new(Box::new(miniz_oxide::deflate::core::CompressorOxide::new(
            miniz_oxide::deflate::core::create_comp_flags_from_zip_params(DEFLATE_LEVEL, 1, 0),
        )));
}

/// Phase 1 of a rendering: the QR code's modules (encoding and error correction).
pub fn qr_modules(text: &str) -> Result<qrcodegen::QrCode, QrImageError> {
    let segments = [qrcodegen::QrSegment::make_bytes(text.as_bytes())];
    qrcodegen::QrCode::encode_segments_advanced(
        &segments,
        qrcodegen::QrCodeEcc::Low,
        qrcodegen::Version::MIN,
        qrcodegen::Version::MAX,
        Some(qrcodegen::Mask::new(MASK)),
        false,
    )
    .map_err(|error| QrImageError::Encode(error.to_string()))
}

/// A 1-bit image, rows of `row_bytes` bytes, most significant bit first, 1 = white.
#[derive(Debug)]
pub struct Bitmap {
    /// Width and height in pixels.
    pub side: usize,
    /// Bytes per row.
    row_bytes: usize,
    /// The rows, top to bottom.
    pixels: Vec<u8>,
}

/// Phase 2: the modules scaled to pixels, with the quiet zone.
pub fn bitmap_of(code: &qrcodegen::QrCode) -> Bitmap {
    let modules = usize::try_from(code.size()).unwrap_or(0);
    let side = (modules + 2 * QUIET_ZONE_MODULES) * PIXELS_PER_MODULE;
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0xffu8; row_bytes * side];
    let mut row = vec![0xffu8; row_bytes];
    for module_y in 0..code.size() {
        row.fill(0xff);
        for module_x in (0..code.size()).filter(|&x| code.get_module(x, module_y)) {
            let x0 = (module_x.unsigned_abs() as usize + QUIET_ZONE_MODULES) * PIXELS_PER_MODULE;
            for x in x0..x0 + PIXELS_PER_MODULE {
                row[x / 8] &= !(0x80 >> (x % 8));
            }
        }
        let y0 = (module_y.unsigned_abs() as usize + QUIET_ZONE_MODULES) * PIXELS_PER_MODULE;
        for y in y0..y0 + PIXELS_PER_MODULE {
            pixels[y * row_bytes..(y + 1) * row_bytes].copy_from_slice(&row);
        }
    }
    Bitmap {
        side,
        row_bytes,
        pixels,
    }
}

/// Phase 3: the bitmap as a grayscale PNG, 1 bit per pixel. Each row is stored as is, or as
/// "same as above" (PNG's Up filter) when it repeats the previous one, then deflated.
pub fn encode_png(bitmap: &Bitmap) -> Result<Vec<u8>, QrImageError> {
    let Bitmap {
        side,
        row_bytes,
        pixels,
    } = bitmap;
    let mut filtered = Vec::with_capacity((row_bytes + 1) * side);
    let mut previous: Option<&[u8]> = None;
    for row in pixels.chunks_exact(*row_bytes) {
        if previous == Some(row) {
            filtered.push(FILTER_UP);
            filtered.resize(filtered.len() + row_bytes, 0);
        } else {
            filtered.push(FILTER_NONE);
            filtered.extend_from_slice(row);
        }
        previous = Some(row);
    }
    let zlib = deflate(&filtered)?;
    let side_u32 = u32::try_from(*side).unwrap_or(u32::MAX);
    let mut png_bytes = Vec::with_capacity(zlib.len() + 64);
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, side_u32, side_u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        let mut writer = encoder.write_header()?;
        writer.write_chunk(png::chunk::IDAT, &zlib)?;
        writer.finish()?;
    }
    Ok(png_bytes)
}

/// A zlib stream of `data`, from this thread's compressor.
fn deflate(data: &[u8]) -> Result<Vec<u8>, QrImageError> {
    use miniz_oxide::deflate::core::{TDEFLFlush, TDEFLStatus, compress_to_output};
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        let mut out = Vec::with_capacity(2048);
        let (status, _) = compress_to_output(compressor, data, TDEFLFlush::Finish, |bytes| {
            out.extend_from_slice(bytes);
            true
        });
        match status {
            TDEFLStatus::Done => Ok(out),
            other => Err(QrImageError::Deflate(format!("{other:?}"))),
        }
    })
}

/// Phase 4: the PNG as the data URL Laravel stores.
pub fn data_url_of_png(png: &[u8]) -> String {
    let mut url = String::with_capacity(DATA_URL_PREFIX.len() + png.len().div_ceil(3) * 4);
    url.push_str(DATA_URL_PREFIX);
    base64::engine::general_purpose::STANDARD.encode_string(png, &mut url);
    url
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
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        // Check the zlib and chunk checksums too (the png crate skips Adler-32 by default).
        decoder.ignore_checksums(false);
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

    /// The pixels of a 1-bit grayscale PNG, one byte per pixel (0 black, 255 white).
    fn pixels_of(png_bytes: &[u8]) -> (usize, Vec<u8>) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        // Check the zlib and chunk checksums too (the png crate skips Adler-32 by default).
        decoder.ignore_checksums(false);
        let mut reader = decoder.read_info().expect("valid PNG");
        let mut buffer = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buffer).expect("pixels");
        let side = reader.info().width as usize;
        let row_bytes = side.div_ceil(8);
        let grey = (0..side * side)
            .map(|at| {
                let (x, y) = (at % side, at / side);
                if buffer[y * row_bytes + x / 8] & (0x80 >> (x % 8)) == 0 {
                    0
                } else {
                    255
                }
            })
            .collect();
        (side, grey)
    }

    #[test]
    fn rendered_whatsapp_qrs_scan_back_to_their_text() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut key = |len: usize| {
            let bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        for _ in 0..40 {
            let text = format!("2@{},{},{},{}", key(48), key(32), key(32), key(32));
            let (side, grey) = pixels_of(&qr_png(&text).expect("renders"));
            let mut image =
                rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| grey[y * side + x]);
            let grids = image.detect_grids();
            assert_eq!(grids.len(), 1, "one QR code found");
            let (_, decoded) = grids[0].decode().expect("the QR decodes");
            assert_eq!(decoded, text);
        }
    }

    #[test]
    fn repeated_rows_are_stored_as_up_filtered_zeros_and_stay_small() {
        let text = format!("2@{},{}", "x".repeat(64), "y".repeat(132));
        let png_bytes = qr_png(&text).expect("renders");
        assert!(png_bytes.len() < 1400, "{} bytes", png_bytes.len());
        let (side, grey) = pixels_of(&png_bytes);
        // Every module is PIXELS_PER_MODULE rows tall: the Up rows decode to their row above.
        for y in (0..side).filter(|y| y % PIXELS_PER_MODULE != 0) {
            assert_eq!(
                grey[y * side..(y + 1) * side],
                grey[(y - 1) * side..y * side]
            );
        }
    }

    #[test]
    fn different_texts_give_different_images() {
        assert_ne!(qr_data_url("a").ok(), qr_data_url("b").ok());
    }

    #[test]
    fn a_kept_rendering_reads_and_writes_as_the_data_url() {
        let kept = QrDataUrl::render("2@abc,def,ghi,jkl").expect("renders");
        let url = qr_data_url("2@abc,def,ghi,jkl").expect("renders");
        assert_eq!(kept.to_string(), url);
        let json = serde_json::to_string(&kept).expect("serialises");
        assert_eq!(json, format!("\"{url}\""));
        let back: QrDataUrl = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, kept);
        assert_eq!(&back.png()[..8], b"\x89PNG\r\n\x1a\n");
        assert!(serde_json::from_str::<QrDataUrl>("\"data:x\"").is_err());
        assert!(
            !format!("{kept:?}").contains("base64"),
            "Debug never shows the image"
        );
    }
}
