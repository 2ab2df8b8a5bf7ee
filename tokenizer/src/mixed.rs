//! The four image sources of issue 24 mixed into one training or held-out set: easy-VQA, the
//! procedural scenes, emoji and Tux Paint stamps, each with its own fixed held-out split, so a
//! tokenizer trained on the mix is measured per source on images none of its runs saw.
//!
//! A training config selects it with a `[data]` table ([`MixedData`]); the same table, given to
//! `eval-tokenizer --mix`, names the held-out images. Every source is capped (a seeded subset,
//! the same for a given seed whatever the other sources are), and the whole set is bounded in
//! memory before anything past the first source is decoded.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::batch::shuffled;
use vqrae_data::captioned::{CaptionedOptions, CaptionedSource, CaptionedSplit};
use vqrae_data::easy_vqa::{self, Split};
use vqrae_data::image_io::resize;
use vqrae_data::labelled::Dataset;
use vqrae_data::scenes::{SceneDataset, TEST_SCENES, TRAIN_SCENES};

use crate::checkpoint_eval::CheckpointEval;
use crate::error::{Result, TokenizerError};
use crate::eval::{evaluate_parts, EvalReport, Probes};
use crate::fd_dinov2::FdProbe;
use crate::frechet::{frechet_distance, FeatureStats};
use crate::model::Vqrae;
use crate::train::TrainConfig;

/// The most images a cap may ask of one source.
pub const MAX_PER_SOURCE: usize = 20_000;

/// The most pixel bytes (RGB) a mixed set may hold: 10,000 images at 224 px, 40,000 at 112 px.
pub const MAX_SET_BYTES: u64 = 1_536 << 20;

/// One source of the mix; in TOML by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MixSource {
    #[serde(rename = "easy-vqa")]
    EasyVqa,
    #[serde(rename = "scenes")]
    Scenes,
    #[serde(rename = "emoji")]
    Emoji,
    #[serde(rename = "tuxpaint")]
    TuxPaint,
}

impl MixSource {
    /// All four, in the order reports list them.
    pub const ALL: [MixSource; 4] = [
        MixSource::EasyVqa,
        MixSource::Scenes,
        MixSource::Emoji,
        MixSource::TuxPaint,
    ];

    /// The name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            MixSource::EasyVqa => "easy-vqa",
            MixSource::Scenes => "scenes",
            MixSource::Emoji => "emoji",
            MixSource::TuxPaint => "tuxpaint",
        }
    }

    /// The source's own seed offset: a source's subset depends on the mix's seed and on the
    /// source, not on which other sources are listed or in what order.
    fn seed(self, seed: u64) -> u64 {
        seed.wrapping_add(self as u64)
    }

    /// Up to `cap` images (0: all) of `split`, as `size` x `size` RGB, with their captions,
    /// and how many the split has in all. `budget` is what the set may still hold, in images of
    /// this size; a source whose images would not fit is refused before they are decoded.
    fn load(
        self,
        root: &Path,
        split: Split,
        cap: usize,
        seed: u64,
        size: u32,
        budget: usize,
    ) -> Result<(Vec<RgbImage>, Vec<String>, usize)> {
        let fits = |n: usize| -> Result<()> {
            if n > budget {
                return Err(TokenizerError::Invalid(format!(
                    "the mixed set would hold more than {MAX_SET_BYTES} bytes of {size} px images \
                     ({n} more from {self}, room for {budget}): lower its caps"
                )));
            }
            Ok(())
        };
        let take = |n: usize| if cap == 0 { n } else { cap.min(n) };
        let seed = self.seed(seed);
        let (images, captions, available) = match self {
            MixSource::EasyVqa => {
                let ds = easy_vqa::load_split(root, split)?;
                let known = ds
                    .images
                    .iter()
                    .filter(|i| i.color_shape().is_some())
                    .count();
                fits(take(known))?;
                let set = ds.color_shape_images(cap, seed)?;
                (set.images, set.captions, known)
            }
            MixSource::Scenes => {
                let n = match split {
                    Split::Train => TRAIN_SCENES,
                    Split::Test => TEST_SCENES,
                };
                fits(take(n))?;
                let images = Dataset::Scenes.load(root, split, cap, seed)?.images;
                // the same subset as the images': the first `take(n)` of the seeded shuffle
                let scenes = SceneDataset::split(split, n);
                let order: Vec<usize> = if take(n) == n {
                    (0..n).collect()
                } else {
                    shuffled(n, seed)[..take(n)].to_vec()
                };
                let captions = order
                    .iter()
                    .map(|&i| scenes.caption(i).unwrap_or_default())
                    .collect();
                (images, captions, n)
            }
            MixSource::Emoji | MixSource::TuxPaint => {
                let src = match self {
                    MixSource::Emoji => CaptionedSource::Emoji,
                    _ => CaptionedSource::TuxPaint,
                };
                let set = src.open(root, &CaptionedOptions::default())?;
                let want = match split {
                    Split::Train => CaptionedSplit::Train,
                    Split::Test => CaptionedSplit::HeldOut,
                };
                let items: Vec<_> = set.split(want).collect();
                let n = take(items.len());
                fits(n)?;
                let order: Vec<usize> = if n == items.len() {
                    (0..n).collect()
                } else {
                    shuffled(items.len(), seed)[..n].to_vec()
                };
                let images = order
                    .iter()
                    .map(|&i| set.item_image(items[i], size))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let captions = order.iter().map(|&i| items[i].caption.clone()).collect();
                (images, captions, items.len())
            }
        };
        let sized = images
            .into_iter()
            .map(|i| {
                if i.dimensions() == (size, size) {
                    i
                } else {
                    resize(&i, size, size)
                }
            })
            .collect();
        Ok((sized, captions, available))
    }
}

impl fmt::Display for MixSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which sources, how many images of each, and the seed of the subsets: a training config's
/// `[data]` table.
///
/// ```toml
/// [data]
/// sources = ["easy-vqa", "scenes", "emoji", "tuxpaint"]
/// train_per_source = 2000      # 0: all of a source's training split
/// held_out_per_source = 250    # 0: all of its held-out split
/// seed = 0
/// [data.train_caps]            # optional, per source, instead of train_per_source
/// tuxpaint = 0
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixedData {
    pub sources: Vec<MixSource>,
    /// Training images per source (a seeded subset); 0 takes the whole training split.
    pub train_per_source: usize,
    /// Held-out images per source; 0 takes the whole held-out split.
    pub held_out_per_source: usize,
    /// Per-source training caps that replace `train_per_source`.
    pub train_caps: BTreeMap<MixSource, usize>,
    pub seed: u64,
}

impl Default for MixedData {
    fn default() -> Self {
        Self {
            sources: MixSource::ALL.to_vec(),
            train_per_source: 0,
            held_out_per_source: 0,
            train_caps: BTreeMap::new(),
            seed: 0,
        }
    }
}

impl MixedData {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TokenizerError::Invalid(format!("[data]: {m}")));
        if self.sources.is_empty() {
            return bad("sources is empty".into());
        }
        for (i, s) in self.sources.iter().enumerate() {
            if self.sources[..i].contains(s) {
                return bad(format!("source {s} is listed twice"));
            }
        }
        if let Some(s) = self.train_caps.keys().find(|s| !self.sources.contains(s)) {
            return bad(format!("train_caps names {s}, which is not in sources"));
        }
        let caps = [self.train_per_source, self.held_out_per_source];
        if let Some(c) = caps
            .iter()
            .chain(self.train_caps.values())
            .find(|&&c| c > MAX_PER_SOURCE)
        {
            return bad(format!("a cap of {c} is over {MAX_PER_SOURCE} images"));
        }
        Ok(())
    }

    /// The cap of `source` in `split` (0: all).
    pub fn cap(&self, source: MixSource, split: Split) -> usize {
        match split {
            Split::Train => *self
                .train_caps
                .get(&source)
                .unwrap_or(&self.train_per_source),
            Split::Test => self.held_out_per_source,
        }
    }
}

/// One source's images inside a [`MixedSet`]: `images[start..start + len]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourcePart {
    pub source: MixSource,
    pub start: usize,
    pub len: usize,
    /// Images of the split the source has in all (`len` of them were taken).
    pub available: usize,
}

/// The images of one split of a [`MixedData`], source after source in the config's order.
#[derive(Clone, Debug)]
pub struct MixedSet {
    pub images: Vec<RgbImage>,
    /// Each image's caption (parallel to `images`): what text-to-image training conditions on.
    pub captions: Vec<String>,
    pub parts: Vec<SourcePart>,
    pub split: Split,
    pub size: u32,
    /// The config it was made from.
    pub data: MixedData,
}

impl MixedSet {
    /// Loads `split` of every source of `data` from the data `root` at `size` px.
    pub fn load(root: &Path, data: &MixedData, split: Split, size: u32) -> Result<Self> {
        data.validate()?;
        if size == 0 || size as usize > crate::model::MAX_RESOLUTION {
            return Err(TokenizerError::Invalid(format!(
                "mixed set image size {size} is not 1 to {}",
                crate::model::MAX_RESOLUTION
            )));
        }
        let per_image = u64::from(size) * u64::from(size) * 3;
        let mut budget = usize::try_from(MAX_SET_BYTES / per_image).unwrap_or(usize::MAX);
        let mut images = Vec::new();
        let mut captions = Vec::new();
        let mut parts = Vec::new();
        for &source in &data.sources {
            let cap = data.cap(source, split);
            let (got, got_captions, available) =
                source.load(root, split, cap, data.seed, size, budget)?;
            if got.is_empty() {
                return Err(TokenizerError::Invalid(format!(
                    "source {source} has no {split} images under {}",
                    root.display()
                )));
            }
            budget -= got.len();
            parts.push(SourcePart {
                source,
                start: images.len(),
                len: got.len(),
                available,
            });
            images.extend(got);
            captions.extend(got_captions);
        }
        Ok(Self {
            images,
            captions,
            parts,
            split,
            size,
            data: data.clone(),
        })
    }

    /// What the set is, in words and numbers: the feature cache's description of its images.
    pub fn identity(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| format!("{} {}/{}", p.source, p.len, p.available))
            .collect();
        format!(
            "mixed {} {}px seed {}: {}",
            self.split,
            self.size,
            self.data.seed,
            parts.join(", ")
        )
    }

    /// Images per source, in the set's order.
    pub fn counts(&self) -> Vec<(MixSource, usize)> {
        self.parts.iter().map(|p| (p.source, p.len)).collect()
    }
}

/// The data set name of a mixed set's reports.
pub const MIXED_NAME: &str = "mixed sources";

/// What [`evaluate_mixed`] measured: the whole split, each source, and the first images of
/// each source with their reconstructions (for a grid).
pub(crate) struct MixedEval {
    pub report: EvalReport,
    pub per_source: BTreeMap<String, EvalReport>,
    pub originals: Vec<RgbImage>,
    pub reconstructions: Vec<RgbImage>,
}

/// Measures `model` on the split `e.split` of the `[data]` table of the training config
/// `config`, per source; keeps `keep` reconstructions of each source.
pub(crate) fn evaluate_mixed(
    model: &Vqrae,
    config: &Path,
    root: &Path,
    e: &CheckpointEval,
    probes: Probes,
    keep: usize,
) -> Result<MixedEval> {
    let cfg = TrainConfig::from_toml_file(config)?;
    let data = cfg.data.ok_or_else(|| {
        TokenizerError::Invalid(format!("{} has no [data] table", config.display()))
    })?;
    if e.limit > 0 {
        return Err(TokenizerError::Invalid(
            "--limit is for --dataset; with --mix the [data] table caps each source".into(),
        ));
    }
    let set = MixedSet::load(root, &data, e.split, model.config().image_size as u32)?;
    let ranges: Vec<Range<usize>> = set.parts.iter().map(|p| p.start..p.start + p.len).collect();
    let (report, parts, reconstructions) =
        evaluate_parts(model, &set.images, &ranges, probes, e.batch, keep)?;
    let originals = ranges
        .iter()
        .flat_map(|r| {
            set.images[r.start..r.start + keep.min(r.len())]
                .iter()
                .cloned()
        })
        .collect();
    let floors = match (probes.fd, e.fd_floor) {
        (Some(fd), true) => Some(fd_floors(fd, &set, &data, root)?),
        _ => None,
    };
    let per_source = set
        .parts
        .iter()
        .zip(parts)
        .enumerate()
        .map(|(i, (p, mut r))| {
            r.fd_dinov2_floor = floors.as_ref().map(|f| f[i]);
            (p.source.name().to_string(), r)
        })
        .collect();
    Ok(MixedEval {
        report,
        per_source,
        originals,
        reconstructions,
    })
}

/// Per source of `held` (in its order), FD-DINOv2 between its held-out images and as many
/// training images of the same source: what two real samples of these sizes differ by, the
/// floor a reconstruction's FD is read against (FD of a few hundred images is biased upwards).
fn fd_floors(fd: &FdProbe, held: &MixedSet, data: &MixedData, root: &Path) -> Result<Vec<f64>> {
    let train_caps = held.parts.iter().map(|p| (p.source, p.len)).collect();
    let same_sizes = MixedData {
        train_caps,
        ..data.clone()
    };
    let train = MixedSet::load(root, &same_sizes, Split::Train, held.size)?;
    held.parts
        .iter()
        .zip(&train.parts)
        .map(|(h, t)| {
            let real = fd.features(&held.images[h.start..h.start + h.len])?;
            let other = fd.features(&train.images[t.start..t.start + t.len])?;
            frechet_distance(
                &FeatureStats::from_features(&real)?,
                &FeatureStats::from_features(&other)?,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_and_bad_ones_are_refused() -> Result<()> {
        let d: MixedData = toml::from_str(
            "sources = [\"emoji\", \"scenes\"]\ntrain_per_source = 5\n[train_caps]\nemoji = 0\n",
        )
        .map_err(|e| TokenizerError::Invalid(e.to_string()))?;
        d.validate()?;
        assert_eq!(d.cap(MixSource::Emoji, Split::Train), 0);
        assert_eq!(d.cap(MixSource::Scenes, Split::Train), 5);
        assert_eq!(d.cap(MixSource::Scenes, Split::Test), 0);
        let unknown = toml::from_str::<MixedData>("sources = [\"emojis\"]");
        assert!(unknown.is_err_and(|e| e.to_string().contains("emojis")));
        let err = |d: MixedData| {
            d.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let twice = MixedData {
            sources: vec![MixSource::Emoji, MixSource::Emoji],
            ..Default::default()
        };
        assert!(err(twice).contains("twice"));
        let big = MixedData {
            held_out_per_source: MAX_PER_SOURCE + 1,
            ..Default::default()
        };
        assert!(err(big).contains("over"));
        let stray = MixedData {
            sources: vec![MixSource::Scenes],
            train_caps: [(MixSource::Emoji, 1)].into(),
            ..Default::default()
        };
        assert!(err(stray).contains("not in sources"));
        assert!(err(MixedData {
            sources: vec![],
            ..Default::default()
        })
        .contains("empty"));
        Ok(())
    }

    #[test]
    fn scenes_alone_are_capped_seeded_and_sized() -> Result<()> {
        let root = Path::new("/nonexistent");
        let data = MixedData {
            sources: vec![MixSource::Scenes],
            train_per_source: 3,
            held_out_per_source: 2,
            ..Default::default()
        };
        let train = MixedSet::load(root, &data, Split::Train, 16)?;
        let held = MixedSet::load(root, &data, Split::Test, 16)?;
        assert_eq!(train.counts(), [(MixSource::Scenes, 3)]);
        assert_eq!(held.counts(), [(MixSource::Scenes, 2)]);
        assert_eq!(train.parts[0].available, 4000);
        assert_eq!(train.images[0].dimensions(), (16, 16));
        // each image's caption is its own scene's: the same subset of the same split
        let scenes = SceneDataset::split(Split::Train, TRAIN_SCENES);
        let picked = shuffled(TRAIN_SCENES, MixSource::Scenes.seed(0))[..3].to_vec();
        for (k, &i) in picked.iter().enumerate() {
            assert_eq!(Some(train.captions[k].clone()), scenes.caption(i));
            assert_eq!(
                Some(train.images[k].clone()),
                scenes.image(i).map(|im| resize(&im, 16, 16))
            );
        }
        assert_eq!(held.captions.len(), held.images.len());
        assert_ne!(train.images[0], held.images[0]);
        let again = MixedSet::load(root, &data, Split::Train, 16)?;
        assert_eq!(again.images, train.images);
        assert!(
            train.identity().contains("scenes 3/4000"),
            "{}",
            train.identity()
        );
        // a set too large for memory is refused before it is made
        let all = MixedData {
            train_per_source: 0,
            ..data
        };
        let err = MixedSet::load(root, &all, Split::Train, 1024).map(|_| ());
        assert!(err.is_err_and(|e| e.to_string().contains("lower its caps")));
        Ok(())
    }
}
