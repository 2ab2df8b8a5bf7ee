//! Noto emoji with their names as captions: npm `emoji-datasource-google` 16.0.0, installed by
//! `scripts/setup-captioned.sh` into `<data root>/emoji/` as `emoji.json` and `64/<image>.png`
//! (64x64 RGBA; the images are Apache-2.0).
//!
//! Caption rule, from emoji.json's `name` (the Unicode character name for single code points,
//! so older emoji keep Unicode's wording, not CLDR's: "waving hand sign", "father christmas"):
//! - the name in lower case: "GRINNING FACE" -> "grinning face", "KEYCAP: *" -> "keycap: *";
//! - country and subdivision flags, named "Egypt Flag" there: "flag: Egypt" (the place name
//!   keeps its capitals, as in CLDR);
//! - the five skin-tone swatches ("EMOJI MODIFIER FITZPATRICK TYPE-3"): their CLDR names
//!   ("medium-light skin tone");
//! - a skin-tone variation (with [`CaptionedOptions::skin_tones`]): its emoji's caption, then
//!   ": " (or ", " when the caption already has a colon) and the tones, comma-separated, as
//!   CLDR writes them: "waving hand sign: medium skin tone", "kiss: man, man, light skin tone,
//!   dark skin tone". A variation is in its emoji's split.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::captioned::{
    check_item_count, clean_caption, not_installed, read_capped, split_of, CaptionedItem,
    CaptionedOptions, CaptionedSet, CaptionedSource, Skipped,
};
use crate::error::{DataError, Result};

/// The installed folder under the data root.
pub const DIR: &str = "emoji";

/// One entry of emoji.json (the fields used).
#[derive(Deserialize)]
struct Entry {
    name: Option<String>,
    unified: String,
    image: String,
    #[serde(default)]
    subcategory: String,
    #[serde(default)]
    has_img_google: bool,
    #[serde(default)]
    skin_variations: BTreeMap<String, Variation>,
}

#[derive(Deserialize)]
struct Variation {
    unified: String,
    image: String,
    #[serde(default)]
    has_img_google: bool,
}

/// The CLDR name of a skin-tone modifier's code point.
fn tone_name(code: &str) -> Option<&'static str> {
    Some(match code.to_ascii_uppercase().as_str() {
        "1F3FB" => "light skin tone",
        "1F3FC" => "medium-light skin tone",
        "1F3FD" => "medium skin tone",
        "1F3FE" => "medium-dark skin tone",
        "1F3FF" => "dark skin tone",
        _ => return None,
    })
}

/// The caption of an emoji (see the module documentation for the rule).
fn caption(name: &str, unified: &str, subcategory: &str) -> String {
    if let Some(tone) = tone_name(unified) {
        return tone.to_string();
    }
    if matches!(subcategory, "country-flag" | "subdivision-flag") {
        if let Some(place) = name.strip_suffix(" Flag") {
            return format!("flag: {place}");
        }
    }
    name.to_lowercase()
}

/// The caption of a skin-tone variation keyed `key` ("1F3FB", "1F3FB-1F3FE") of an emoji
/// captioned `base`, or `None` for a key that is not skin tones.
fn variation_caption(base: &str, key: &str) -> Option<String> {
    let tones = key
        .split('-')
        .map(tone_name)
        .collect::<Option<Vec<_>>>()?
        .join(", ");
    let sep = if base.contains(':') { ", " } else { ": " };
    Some(format!("{base}{sep}{tones}"))
}

/// An image file name of emoji.json: code points, dashes, ".png"; nothing that leaves `64/`.
fn safe_image_name(name: &str) -> bool {
    name.strip_suffix(".png").is_some_and(|stem| {
        !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    })
}

/// Opens `<root>/emoji`.
pub(crate) fn open(root: &Path, opts: &CaptionedOptions) -> Result<CaptionedSet> {
    let dir = root.join(DIR);
    let index = dir.join("emoji.json");
    if !index.is_file() || !dir.join("64").is_dir() {
        return Err(not_installed("emoji (emoji-datasource-google)", &dir));
    }
    let bytes = read_capped(&index, opts.limits.max_text_file_bytes)?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
        path: index.clone(),
        line: e.line(),
        message: e.to_string(),
    })?;
    from_entries(&dir, entries, opts)
}

fn from_entries(dir: &Path, entries: Vec<Entry>, opts: &CaptionedOptions) -> Result<CaptionedSet> {
    let mut c = Collector {
        dir,
        opts,
        items: Vec::new(),
        skipped: Skipped::default(),
    };
    for e in &entries {
        let Some(name) = e.name.as_deref() else {
            c.skipped.bad_caption += 1 + e.skin_variations.len();
            continue;
        };
        let base = caption(name, &e.unified, &e.subcategory);
        c.push(&e.unified, &e.unified, &base, &e.image, e.has_img_google);
        if !opts.skin_tones {
            continue;
        }
        for (key, v) in &e.skin_variations {
            match variation_caption(&base, key) {
                Some(vc) => c.push(&v.unified, &e.unified, &vc, &v.image, v.has_img_google),
                None => c.skipped.bad_caption += 1,
            }
        }
        check_item_count(dir, c.items.len(), &opts.limits)?;
    }
    CaptionedSet::new(CaptionedSource::Emoji, dir, c.items, c.skipped, opts.limits)
}

/// The items found so far, and what was skipped.
struct Collector<'a> {
    dir: &'a Path,
    opts: &'a CaptionedOptions,
    items: Vec<CaptionedItem>,
    skipped: Skipped,
}

impl Collector<'_> {
    /// Adds the image `image` of id `id` (in `group`) captioned `caption`, or counts why not.
    fn push(&mut self, id: &str, group: &str, caption: &str, image: &str, has_img: bool) {
        let Some(caption) = clean_caption(caption, self.opts.limits.max_caption_bytes) else {
            self.skipped.bad_caption += 1;
            return;
        };
        let path = self.dir.join("64").join(image);
        if !has_img || !safe_image_name(image) || !path.is_file() {
            self.skipped.no_image += 1;
            return;
        }
        let group = group.to_ascii_lowercase();
        self.items.push(CaptionedItem {
            id: id.to_ascii_lowercase(),
            split: split_of(CaptionedSource::Emoji, &group),
            group,
            caption,
            path,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captioned::{CaptionedLimits, CaptionedSplit};
    use image::{Rgba, RgbaImage};

    #[test]
    fn captions_follow_the_rule() {
        assert_eq!(
            caption("GRINNING FACE", "1F600", "face-smiling"),
            "grinning face"
        );
        assert_eq!(
            caption("Egypt Flag", "1F1EA-1F1EC", "country-flag"),
            "flag: Egypt"
        );
        assert_eq!(
            caption("England Flag", "x", "subdivision-flag"),
            "flag: England"
        );
        assert_eq!(caption("CHEQUERED FLAG", "1F3C1", "flag"), "chequered flag");
        assert_eq!(
            caption("KEYCAP: *", "002A-FE0F-20E3", "keycap"),
            "keycap: *"
        );
        assert_eq!(
            caption("EMOJI MODIFIER FITZPATRICK TYPE-3", "1F3FC", "skin-tone"),
            "medium-light skin tone"
        );
        assert_eq!(
            variation_caption("waving hand", "1F3FD").as_deref(),
            Some("waving hand: medium skin tone")
        );
        assert_eq!(
            variation_caption("kiss: man, man", "1F3FB-1F3FF").as_deref(),
            Some("kiss: man, man, light skin tone, dark skin tone")
        );
        assert_eq!(variation_caption("x", "1F600"), None);
        assert!(safe_image_name("1f385-1f3fb.png"));
        assert!(!safe_image_name("../../etc/passwd.png"));
        assert!(!safe_image_name(".png"));
        assert!(!safe_image_name("1f600.gif"));
    }

    /// A fake install: three emoji (one with two skin tones, one without an image file, one
    /// with `has_img_google` false) and their 8x8 PNGs, half transparent.
    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(DIR);
        std::fs::create_dir_all(dir.join("64")).unwrap();
        let json = r#"[
          {"name": "WAVING HAND SIGN", "unified": "1F44B", "image": "1f44b.png",
           "subcategory": "hand-fingers-open", "has_img_google": true,
           "skin_variations": {
             "1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png", "has_img_google": true},
             "1F3FF": {"unified": "1F44B-1F3FF", "image": "1f44b-1f3ff.png", "has_img_google": true}}},
          {"name": "Egypt Flag", "unified": "1F1EA-1F1EC", "image": "1f1ea-1f1ec.png",
           "subcategory": "country-flag", "has_img_google": true},
          {"name": "GHOST", "unified": "1F47B", "image": "1f47b.png", "has_img_google": true},
          {"name": "NOT DRAWN", "unified": "1F4A0", "image": "1f4a0.png", "has_img_google": false}
        ]"#;
        std::fs::write(dir.join("emoji.json"), json).unwrap();
        let img = RgbaImage::from_fn(8, 8, |x, _| Rgba([0, 0, 200, if x < 4 { 255 } else { 0 }]));
        for f in [
            "1f44b",
            "1f44b-1f3fb",
            "1f44b-1f3ff",
            "1f1ea-1f1ec",
            "1f4a0",
        ] {
            img.save(dir.join("64").join(format!("{f}.png"))).unwrap();
        }
        root
    }

    #[test]
    fn a_fake_install_opens_with_captions_splits_and_images() {
        let root = fake_root();
        let set = open(root.path(), &CaptionedOptions::default()).unwrap();
        let ids: Vec<_> = set.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["1f1ea-1f1ec", "1f44b"]);
        assert_eq!(set.items[0].caption, "flag: Egypt");
        assert_eq!(set.items[1].caption, "waving hand sign");
        // The ghost's PNG is missing, the last emoji has no Google image.
        assert_eq!(set.skipped.no_image, 2);
        let img = set.image(1, 16).unwrap();
        assert_eq!(img.dimensions(), (16, 16));
        assert_eq!(img.get_pixel(1, 8).0, [0, 0, 200]);
        assert_eq!(img.get_pixel(14, 8).0, [255, 255, 255]);
        assert!(set.image(2, 16).is_err());
        assert!(set.image(0, 0).is_err());

        let opts = CaptionedOptions {
            skin_tones: true,
            ..Default::default()
        };
        let set = open(root.path(), &opts).unwrap();
        assert_eq!(set.len(), 4);
        let dark = set.items.iter().find(|i| i.id == "1f44b-1f3ff").unwrap();
        assert_eq!(dark.caption, "waving hand sign: dark skin tone");
        assert_eq!(dark.group, "1f44b");
        // Variants share their emoji's split.
        let base = set.items.iter().find(|i| i.id == "1f44b").unwrap();
        assert_eq!(dark.split, base.split);
        assert_eq!(
            base.split,
            split_of(CaptionedSource::Emoji, "1f44b"),
            "the split is the hash's"
        );
        let (train, held) = set.counts();
        assert_eq!(train + held, 4);
        assert!(set.split(CaptionedSplit::Train).count() == train);
    }

    #[test]
    fn limits_and_missing_files_give_clear_errors() {
        let root = fake_root();
        let small = CaptionedOptions {
            skin_tones: true,
            limits: CaptionedLimits {
                max_items: 2,
                ..Default::default()
            },
        };
        let err = open(root.path(), &small).unwrap_err().to_string();
        assert!(err.contains("more than the 2 items"), "{err}");
        let tiny_files = CaptionedOptions {
            limits: CaptionedLimits {
                max_image_file_bytes: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let set = open(root.path(), &tiny_files).unwrap();
        let err = set.image(0, 8).unwrap_err().to_string();
        assert!(err.contains("more than the 10 allowed"), "{err}");
        let short = CaptionedOptions {
            limits: CaptionedLimits {
                max_caption_bytes: 12,
                ..Default::default()
            },
            ..Default::default()
        };
        let set = open(root.path(), &short).unwrap();
        assert_eq!(set.len(), 1, "'waving hand sign' is 16 bytes");
        assert_eq!(set.skipped.bad_caption, 1);

        let empty = tempfile::tempdir().unwrap();
        let err = open(empty.path(), &CaptionedOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("scripts/setup-captioned.sh"), "{err}");
        std::fs::write(root.path().join(DIR).join("emoji.json"), "[{]").unwrap();
        let err = open(root.path(), &CaptionedOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("emoji.json:1"), "{err}");
    }
}
