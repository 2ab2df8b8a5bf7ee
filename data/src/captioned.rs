//! Real captioned image sets installed by `scripts/setup-captioned.sh` ([`crate::emoji`],
//! [`crate::tuxpaint`]), behind one shape: items with an id, a caption and a fixed split, and
//! a loader to a square RGB image of any size.
//!
//! The split is a hash of the item's group (an emoji, not its skin-tone variant; a stamp), so
//! it does not move when files are added, removed or listed in another order. Everything read
//! from the installed files is bounded: the number of items, a caption's bytes, an image file's
//! bytes before decoding, and the decoder's own limits.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::{imageops, Rgb, RgbImage, RgbaImage};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::image_io::{decode_rgba_named, resize, DecodeLimits};

/// Items held out, per thousand groups: 10%.
pub const HELD_OUT_PER_MILLE: u64 = 100;

/// The largest output side [`CaptionedSet::image`] makes (a 4096x4096 RGB image is 48 MiB).
pub const MAX_OUTPUT_SIDE: u32 = 4096;

/// Which of the two installed sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CaptionedSource {
    /// Noto emoji (emoji-datasource-google 16.0.0), captions from their Unicode names.
    Emoji,
    /// Tux Paint's default stamps, captions from their English descriptions.
    #[cfg_attr(feature = "clap", value(name = "tuxpaint"))]
    TuxPaint,
}

impl CaptionedSource {
    /// Both sources, in a fixed order.
    pub const ALL: [CaptionedSource; 2] = [CaptionedSource::Emoji, CaptionedSource::TuxPaint];

    /// The name used on command lines and in reports, also mixed into the split's hash.
    pub fn name(self) -> &'static str {
        match self {
            CaptionedSource::Emoji => "emoji",
            CaptionedSource::TuxPaint => "tuxpaint",
        }
    }

    /// Opens this source's installed files under the data `root`.
    pub fn open(self, root: &Path, opts: &CaptionedOptions) -> Result<CaptionedSet> {
        match self {
            CaptionedSource::Emoji => crate::emoji::open(root, opts),
            CaptionedSource::TuxPaint => crate::tuxpaint::open(root, opts),
        }
    }
}

impl fmt::Display for CaptionedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CaptionedSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|src| src.name() == s)
            .ok_or_else(|| DataError::Parse {
                what: "captioned image source",
                value: s.to_string(),
                expected: "emoji or tuxpaint".to_string(),
            })
    }
}

/// Training or held out; fixed per group by [`split_of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptionedSplit {
    Train,
    HeldOut,
}

/// The split of a group (an emoji's base code, a stamp's id) of `source`: the first eight bytes
/// of SHA-256 of `"<source>/<group>"`, modulo 1000, below [`HELD_OUT_PER_MILLE`] is held out.
pub fn split_of(source: CaptionedSource, group: &str) -> CaptionedSplit {
    let digest = Sha256::digest(format!("{}/{group}", source.name()).as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    if u64::from_be_bytes(head) % 1000 < HELD_OUT_PER_MILLE {
        CaptionedSplit::HeldOut
    } else {
        CaptionedSplit::Train
    }
}

/// What reading an installed set may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptionedLimits {
    /// Most items a set may hold (an error beyond it, not a silent cut).
    pub max_items: usize,
    /// Longest caption, bytes; longer ones are skipped and counted.
    pub max_caption_bytes: usize,
    /// Largest image file, bytes, checked before it is read.
    pub max_image_file_bytes: u64,
    /// Largest description or index file (a stamp's .txt, emoji.json), bytes.
    pub max_text_file_bytes: u64,
    /// The decoder's limits for one image.
    pub decode: DecodeLimits,
}

impl Default for CaptionedLimits {
    /// 20,000 items (the two sets hold 3,786 and 785), 256-byte captions (the longest stamp
    /// description is 180), 8 MiB image files (the largest stamp is 0.9 MiB), 16 MiB text files
    /// (emoji.json is 1.3 MiB), images up to 4096 pixels a side.
    fn default() -> Self {
        Self {
            max_items: 20_000,
            max_caption_bytes: 256,
            max_image_file_bytes: 8 << 20,
            max_text_file_bytes: 16 << 20,
            decode: DecodeLimits::new(4096 * 4096, 4096, 64),
        }
    }
}

/// How to open a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptionedOptions {
    /// Emoji: also each skin-tone variation, as an extra image of its emoji (same split,
    /// the tone in the caption). Tux Paint ignores it.
    pub skin_tones: bool,
    pub limits: CaptionedLimits,
}

/// One captioned image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionedItem {
    /// Unique in its set: an emoji's code points ("1f600", "1f385-1f3fb"), a stamp's path
    /// under `stamps/` without ".png" ("clothes/dress-black").
    pub id: String,
    /// What the split is decided by: the emoji's base id, or the stamp's id.
    pub group: String,
    pub caption: String,
    pub split: CaptionedSplit,
    pub(crate) path: PathBuf,
}

/// Files passed over while opening a set, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// An image with no caption to go with it (a stamp PNG without its .txt).
    pub no_caption: usize,
    /// A caption that is empty, not UTF-8, has control characters or is too long.
    pub bad_caption: usize,
    /// A caption with no image (an emoji without a Google image, or its PNG missing).
    pub no_image: usize,
}

/// An opened set: its items sorted by id, and what was skipped.
#[derive(Clone, Debug)]
pub struct CaptionedSet {
    pub source: CaptionedSource,
    pub items: Vec<CaptionedItem>,
    pub skipped: Skipped,
    pub(crate) limits: CaptionedLimits,
}

impl CaptionedSet {
    /// Sorts `items` by id, refusing a duplicate id and more than `limits.max_items` items.
    pub(crate) fn new(
        source: CaptionedSource,
        dir: &Path,
        mut items: Vec<CaptionedItem>,
        skipped: Skipped,
        limits: CaptionedLimits,
    ) -> Result<Self> {
        check_item_count(dir, items.len(), &limits)?;
        items.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(w) = items.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(DataError::Invalid {
                path: dir.to_path_buf(),
                message: format!("two items have the id {:?}", w[0].id),
            });
        }
        Ok(Self {
            source,
            items,
            skipped,
            limits,
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items of one split, in id order.
    pub fn split(&self, split: CaptionedSplit) -> impl Iterator<Item = &CaptionedItem> {
        self.items.iter().filter(move |it| it.split == split)
    }

    /// `(train, held out)` item counts.
    pub fn counts(&self) -> (usize, usize) {
        let held = self.split(CaptionedSplit::HeldOut).count();
        (self.items.len() - held, held)
    }

    /// Item `index` as a `size` x `size` RGB image: transparency composited on white, the
    /// aspect kept by padding with white to a square, then resized (Catmull-Rom).
    pub fn image(&self, index: usize, size: u32) -> Result<RgbImage> {
        let item = self.items.get(index).ok_or(DataError::OutOfRange {
            what: "captioned image set",
            index,
            len: self.items.len(),
        })?;
        self.item_image(item, size)
    }

    /// [`Self::image`] for an item of this set (or one with the same files).
    pub fn item_image(&self, item: &CaptionedItem, size: u32) -> Result<RgbImage> {
        if size == 0 || size > MAX_OUTPUT_SIDE {
            return Err(DataError::Parse {
                what: "image size",
                value: size.to_string(),
                expected: format!("1 to {MAX_OUTPUT_SIDE}"),
            });
        }
        let bytes = read_capped(&item.path, self.limits.max_image_file_bytes)?;
        let rgba = decode_rgba_named(
            &bytes,
            &item.path.display().to_string(),
            &self.limits.decode,
        )?;
        Ok(square_on_white(&on_white(&rgba), size))
    }
}

/// Fails when `n` items are more than `limits.max_items`.
pub(crate) fn check_item_count(dir: &Path, n: usize, limits: &CaptionedLimits) -> Result<()> {
    if n > limits.max_items {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            message: format!("more than the {} items allowed", limits.max_items),
        });
    }
    Ok(())
}

/// The error for a set that is not installed under `dir`.
pub(crate) fn not_installed(what: &str, dir: &Path) -> DataError {
    DataError::Invalid {
        path: dir.to_path_buf(),
        message: format!(
            "{what} not installed here: run scripts/setup-captioned.sh (or set VQRAE_DATA to the \
             data root)"
        ),
    }
}

/// Reads a whole file of at most `max` bytes; a larger one is refused before it is read (and
/// a file that grows while being read is cut at `max + 1` bytes and refused).
pub(crate) fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let too_big = |len: u64| DataError::Invalid {
        path: path.to_path_buf(),
        message: format!("file is {len} bytes, more than the {max} allowed"),
    };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A caption as found in a file, or `None` when it cannot be one: surrounding white space and
/// a byte-order mark dropped, then non-empty, no control characters, at most `max_bytes`.
pub(crate) fn clean_caption(raw: &str, max_bytes: usize) -> Option<String> {
    let s = raw.trim_start_matches('\u{feff}').trim();
    let ok = !s.is_empty() && s.len() <= max_bytes && !s.chars().any(char::is_control);
    ok.then(|| s.to_string())
}

/// Composites `img` over white: `c * a + 255 * (1 - a)`, rounded.
pub(crate) fn on_white(img: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b, a] = img.get_pixel(x, y).0;
        let a = u32::from(a);
        let mix = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        Rgb([mix(r), mix(g), mix(b)])
    })
}

/// Resizes `img` so that its longer side is `size` (the shorter one in proportion, at least
/// one pixel) and centres it on a white `size` x `size` square. Memory follows the output.
pub(crate) fn square_on_white(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let long = u64::from(w.max(h).max(1));
    let scale = |side: u32| -> u32 {
        let s = (u64::from(side) * u64::from(size) + long / 2) / long;
        s.clamp(1, u64::from(size)) as u32
    };
    let (sw, sh) = (scale(w), scale(h));
    let scaled = resize(img, sw, sh);
    if (sw, sh) == (size, size) {
        return scaled;
    }
    let mut out = RgbImage::from_pixel(size, size, Rgb([255; 3]));
    let (x, y) = ((size - sw) / 2, (size - sh) / 2);
    imageops::replace(&mut out, &scaled, i64::from(x), i64::from(y));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    #[test]
    fn split_is_fixed_by_the_group_and_holds_out_about_a_tenth() {
        let src = CaptionedSource::TuxPaint;
        assert_eq!(split_of(src, "a/b"), split_of(src, "a/b"));
        let held = (0..10_000)
            .filter(|i| split_of(src, &format!("stamp{i}")) == CaptionedSplit::HeldOut)
            .count();
        assert!((900..1100).contains(&held), "{held} of 10,000 held out");
        // The source is part of the hash: the same names split differently across sources.
        let differ = (0..1000)
            .filter(|i| {
                let g = format!("g{i}");
                split_of(CaptionedSource::Emoji, &g) != split_of(src, &g)
            })
            .count();
        assert!(differ > 50, "{differ}");
    }

    #[test]
    fn source_names_round_trip_and_an_unknown_one_is_refused() {
        for src in CaptionedSource::ALL {
            assert_eq!(src.name().parse::<CaptionedSource>().ok(), Some(src));
        }
        let err = "emojis".parse::<CaptionedSource>().unwrap_err().to_string();
        assert!(err.contains("emojis") && err.contains("tuxpaint"), "{err}");
    }

    #[test]
    fn captions_are_trimmed_and_bad_ones_refused() {
        assert_eq!(
            clean_caption("\u{feff} A black dress.\r", 64).as_deref(),
            Some("A black dress.")
        );
        assert_eq!(clean_caption("   ", 64), None);
        assert_eq!(clean_caption("a\u{7}b", 64), None);
        assert_eq!(clean_caption("abcdef", 5), None);
        assert_eq!(clean_caption("abcde", 5).as_deref(), Some("abcde"));
    }

    #[test]
    fn transparency_goes_white_and_the_aspect_is_kept() {
        // A 4x2 image: left half opaque red, right half transparent red.
        let img = RgbaImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([255, 0, 0, 0])
            }
        });
        let rgb = on_white(&img);
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(3, 1).0, [255, 255, 255]);
        let half = on_white(&RgbaImage::from_pixel(1, 1, Rgba([0, 0, 0, 128])));
        assert_eq!(half.get_pixel(0, 0).0, [127; 3]);
        let sq = square_on_white(&rgb, 8);
        assert_eq!(sq.dimensions(), (8, 8));
        // 4x2 -> 8x4 centred: rows 0-1 and 6-7 are padding.
        assert_eq!(sq.get_pixel(0, 0).0, [255; 3]);
        assert_eq!(sq.get_pixel(7, 7).0, [255; 3]);
        assert_eq!(sq.get_pixel(0, 3).0, [255, 0, 0]);
        // A 1-pixel-high strip keeps at least one row.
        assert_eq!(
            square_on_white(&RgbImage::new(300, 1), 16).dimensions(),
            (16, 16)
        );
    }

    #[test]
    fn capped_reads_refuse_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [7u8; 100]).unwrap();
        assert_eq!(read_capped(&p, 100).unwrap().len(), 100);
        let err = read_capped(&p, 99).unwrap_err().to_string();
        assert!(err.contains("100 bytes") && err.contains("99"), "{err}");
        assert!(read_capped(&dir.path().join("missing"), 10).is_err());
    }
}
