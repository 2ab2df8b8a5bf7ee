//! Tux Paint's default stamps with their descriptions as captions: Debian
//! `tuxpaint-stamps-default` 2022.06.04-1 (GPL-2), installed by `scripts/setup-captioned.sh`
//! into `<data root>/tuxpaint/stamps/` (`<theme>/.../<name>.png` beside `<name>.txt`).
//!
//! A stamp's caption is the first line of its .txt, the English description ("A black
//! dress."); the lines after it are translations (`fr.utf8=...`) and are not read. A PNG with
//! no .txt beside it is skipped and counted: in this package those are the eleven
//! `<name>_mirror.png` images, mirrored versions of a stamp that has its own. Most stamps are
//! RGBA cut-outs (photographs and drawings) of any size up to a few hundred pixels a side;
//! [`crate::captioned::CaptionedSet::image`] composites them on white and pads them square.

use std::path::{Path, PathBuf};

use crate::captioned::{
    check_item_count, clean_caption, not_installed, read_capped, split_of, CaptionedItem,
    CaptionedOptions, CaptionedSet, CaptionedSource, Skipped,
};
use crate::error::{DataError, Result};

/// The installed folder under the data root; the stamps are in its `stamps/`.
pub const DIR: &str = "tuxpaint";

/// Deepest folder nesting read under `stamps/` (the package goes five deep).
const MAX_DEPTH: usize = 16;

/// Opens `<root>/tuxpaint/stamps`.
pub(crate) fn open(root: &Path, opts: &CaptionedOptions) -> Result<CaptionedSet> {
    let stamps = root.join(DIR).join("stamps");
    if !stamps.is_dir() {
        return Err(not_installed(
            "Tux Paint stamps (tuxpaint-stamps-default)",
            &stamps,
        ));
    }
    let mut pngs = Vec::new();
    walk(&stamps, "", 0, &mut pngs, opts)?;
    let mut items = Vec::new();
    let mut skipped = Skipped::default();
    for (rel, png) in pngs {
        let txt = png.with_extension("txt");
        if !txt.is_file() {
            skipped.no_caption += 1;
            continue;
        }
        match read_caption(&txt, opts)? {
            Some(caption) => items.push(CaptionedItem {
                split: split_of(CaptionedSource::TuxPaint, &rel),
                group: rel.clone(),
                id: rel,
                caption,
                path: png,
            }),
            None => skipped.bad_caption += 1,
        }
    }
    CaptionedSet::new(
        CaptionedSource::TuxPaint,
        &stamps,
        items,
        skipped,
        opts.limits,
    )
}

/// The first line of a description file as a caption, or `None` when it is not one (empty,
/// not UTF-8, control characters, too long).
fn read_caption(txt: &Path, opts: &CaptionedOptions) -> Result<Option<String>> {
    let bytes = read_capped(txt, opts.limits.max_text_file_bytes)?;
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(std::str::from_utf8(first)
        .ok()
        .and_then(|line| clean_caption(line, opts.limits.max_caption_bytes)))
}

/// Collects `(id, path)` of every PNG under `dir`, which is `prefix` under `stamps/`: the id is
/// the path under `stamps/` without ".png", '/'-separated. Hidden entries and names that are not UTF-8 are passed over;
/// symlinked folders are not followed (they could loop). At most `max_items` PNGs.
fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
    opts: &CaptionedOptions,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(DataError::Invalid {
            path: dir.to_path_buf(),
            message: format!("folders nested more than {MAX_DEPTH} deep"),
        });
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with('.') {
            entries.push((name, entry));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, entry) in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if kind.is_dir() {
            walk(&path, &format!("{prefix}{name}/"), depth + 1, out, opts)?;
        } else if let Some(stem) = name.strip_suffix(".png") {
            if kind.is_file() || path.is_file() {
                out.push((format!("{prefix}{stem}"), path));
                check_item_count(dir, out.len(), &opts.limits)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captioned::CaptionedLimits;
    use image::{Rgba, RgbaImage};

    /// A fake install: four stamps in two themes, one without a .txt (a mirror), one with an
    /// empty first line, one a tall red cut-out on a transparent background.
    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let stamps = root.path().join(DIR).join("stamps");
        std::fs::create_dir_all(stamps.join("clothes/dresses")).unwrap();
        std::fs::create_dir_all(stamps.join("animals")).unwrap();
        let tall = RgbaImage::from_fn(10, 20, |x, _| {
            Rgba([220, 0, 0, if (3..7).contains(&x) { 255 } else { 0 }])
        });
        for f in [
            "clothes/dresses/dress-black",
            "clothes/dresses/dress-black_mirror",
            "animals/frog",
            "animals/blank",
        ] {
            tall.save(stamps.join(format!("{f}.png"))).unwrap();
        }
        let write = |f: &str, text: &str| std::fs::write(stamps.join(f), text).unwrap();
        write(
            "clothes/dresses/dress-black.txt",
            "A black dress.\nfr.utf8=Une robe noire.\n",
        );
        write(
            "animals/frog.txt",
            "\u{feff}A frog.\r\nde.utf8=Ein Frosch.\n",
        );
        write("animals/blank.txt", "\nfr.utf8=Rien.\n");
        write("animals/svg-only.txt", "An SVG stamp.\n");
        root
    }

    #[test]
    fn a_fake_install_opens_with_captions_and_counts_what_it_skips() {
        let root = fake_root();
        let set = open(root.path(), &CaptionedOptions::default()).unwrap();
        let got: Vec<_> = set
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.caption.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("animals/frog", "A frog."),
                ("clothes/dresses/dress-black", "A black dress.")
            ]
        );
        assert_eq!(set.skipped.no_caption, 1, "the mirror");
        assert_eq!(set.skipped.bad_caption, 1, "the blank first line");
        for item in &set.items {
            assert_eq!(item.split, split_of(CaptionedSource::TuxPaint, &item.id));
        }
        // 10x20 -> 16x32 centred in 32x32: columns 0-7 and 24-31 are padding, the red bar
        // is in the middle, the transparent sides went white.
        let img = set.image(0, 32).unwrap();
        assert_eq!(img.dimensions(), (32, 32));
        assert_eq!(img.get_pixel(2, 16).0, [255; 3]);
        assert_eq!(img.get_pixel(10, 16).0, [255; 3]);
        assert_eq!(img.get_pixel(16, 16).0, [220, 0, 0]);
        assert_eq!(set.image(1, 5).unwrap().dimensions(), (5, 5));
    }

    #[test]
    fn limits_and_bad_files_give_clear_errors() {
        let root = fake_root();
        let few = CaptionedOptions {
            limits: CaptionedLimits {
                max_items: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = open(root.path(), &few).unwrap_err().to_string();
        assert!(err.contains("more than the 3 items"), "{err}");
        let stamps = root.path().join(DIR).join("stamps");
        // Not a PNG after all: the loader says which file and why.
        std::fs::write(stamps.join("animals/frog.png"), b"not an image").unwrap();
        let set = open(root.path(), &CaptionedOptions::default()).unwrap();
        let err = set.image(0, 8).unwrap_err().to_string();
        assert!(err.contains("frog.png"), "{err}");
        // A description file larger than allowed is an error, not a silent skip.
        let small_text = CaptionedOptions {
            limits: CaptionedLimits {
                max_text_file_bytes: 8,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = open(root.path(), &small_text).unwrap_err().to_string();
        assert!(
            err.contains(".txt") && err.contains("more than the 8"),
            "{err}"
        );

        let empty = tempfile::tempdir().unwrap();
        let err = open(empty.path(), &CaptionedOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("scripts/setup-captioned.sh"), "{err}");
    }
}
