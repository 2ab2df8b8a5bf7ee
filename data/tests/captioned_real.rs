//! The captioned image sets as installed by `scripts/setup-captioned.sh` (the test command runs
//! it through scripts/setup-models.sh): counts, the held-out fraction, captions, and every
//! image loaded at two sizes. `cargo test -p vqrae-data --test captioned_real -- --nocapture`
//! prints the counts.

use std::collections::HashMap;
use std::path::PathBuf;

use vqrae_data::captioned::{CaptionedOptions, CaptionedSet, CaptionedSource, CaptionedSplit};

fn root() -> PathBuf {
    let root = match std::env::var_os("VQRAE_DATA") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data"),
    };
    assert!(
        root.join("emoji/emoji.json").is_file() && root.join("tuxpaint/stamps").is_dir(),
        "captioned images not found under {}: run scripts/setup-captioned.sh first",
        root.display()
    );
    root
}

fn open(source: CaptionedSource, skin_tones: bool) -> CaptionedSet {
    let opts = CaptionedOptions {
        skin_tones,
        ..Default::default()
    };
    match source.open(&root(), &opts) {
        Ok(set) => set,
        Err(e) => panic!("{source}: {e}"),
    }
}

/// Captions non-empty, printable and within the cap; ids unique; held out about a tenth of the
/// groups (never a group on both sides).
fn check_set(set: &CaptionedSet, groups: (usize, usize)) {
    let mut split_of_group = HashMap::new();
    for item in &set.items {
        assert!(!item.caption.is_empty(), "{}", item.id);
        assert!(item.caption.len() <= 256, "{}: {}", item.id, item.caption);
        assert!(
            !item.caption.chars().any(char::is_control) && item.caption.trim() == item.caption,
            "{}: {:?}",
            item.id,
            item.caption
        );
        let first = split_of_group
            .entry(item.group.as_str())
            .or_insert(item.split);
        assert_eq!(*first, item.split, "group {} on both sides", item.group);
    }
    let n = split_of_group.len();
    assert!(
        (groups.0..=groups.1).contains(&n),
        "{}: {n} groups",
        set.source
    );
    let held = split_of_group
        .values()
        .filter(|s| **s == CaptionedSplit::HeldOut)
        .count();
    let frac = held as f64 / n as f64;
    assert!(
        (0.07..=0.13).contains(&frac),
        "{}: {held} of {n} held out",
        set.source
    );
    let (train, held_items) = set.counts();
    println!(
        "{}: {} items ({train} train / {held_items} held out), {n} groups ({held} held out, \
         {:.1}%), skipped {:?}",
        set.source,
        set.len(),
        100.0 * frac,
        set.skipped
    );
}

/// Every image loads, at the tokenizer's 64 and DINOv2's 112, to exactly that size.
fn check_images(set: &CaptionedSet) {
    for (i, item) in set.items.iter().enumerate() {
        for size in [64, 112] {
            match set.image(i, size) {
                Ok(img) => assert_eq!(img.dimensions(), (size, size), "{}", item.id),
                Err(e) => panic!("{}: {e}", item.id),
            }
        }
    }
}

#[test]
fn emoji_named_images_and_skin_tones() {
    let set = open(CaptionedSource::Emoji, false);
    assert!((1850..=1950).contains(&set.len()), "{} emoji", set.len());
    check_set(&set, (1850, 1950));
    let caption = |id: &str| {
        set.items
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.caption.clone())
    };
    assert_eq!(caption("1f600").as_deref(), Some("grinning face"));
    assert_eq!(caption("1f34e").as_deref(), Some("red apple"));
    assert_eq!(caption("1f1ea-1f1ec").as_deref(), Some("flag: Egypt"));
    check_images(&set);

    let all = open(CaptionedSource::Emoji, true);
    assert!(
        (3700..=3900).contains(&all.len()),
        "{} with skin tones",
        all.len()
    );
    check_set(&all, (1850, 1950));
    assert!(all
        .items
        .iter()
        .any(|i| i.caption == "waving hand sign: medium skin tone"));
    assert_eq!(all.skipped.no_image + all.skipped.bad_caption, 0);
}

#[test]
fn tuxpaint_stamps_with_descriptions() {
    let set = open(CaptionedSource::TuxPaint, false);
    assert!((750..=820).contains(&set.len()), "{} stamps", set.len());
    check_set(&set, (750, 820));
    let caption = |id: &str| {
        set.items
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.caption.clone())
    };
    assert_eq!(caption("clothes/button").as_deref(), Some("A button."));
    assert_eq!(
        caption("animals/amphibians/frog").as_deref(),
        Some("A frog.")
    );
    // The package's PNGs without a description are its eleven `_mirror` images.
    assert!(set.skipped.no_caption <= 20, "{:?}", set.skipped);
    check_images(&set);
}

#[test]
fn an_unknown_source_name_is_refused() {
    let err = "clipart"
        .parse::<CaptionedSource>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("clipart") && err.contains("emoji"), "{err}");
}
