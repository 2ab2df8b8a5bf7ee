//! Text-to-image on a real captioned set (issue 24's emoji figures): a generator draws the
//! distinct captions of the training split on new seeds, and of the held-out split
//! (generalisation), and two figures judge the images through DINOv2-S class tokens (the
//! features of FD-DINOv2, [`vqrae_tokenizer::fd_dinov2`]):
//!
//! - **FD-DINOv2** between the generated images of a split's captions and the real images of
//!   the same captions (one per item): how far the generated distribution is from the real one;
//! - **retrieval**: is the nearest neighbour (cosine similarity) of a generated image, among
//!   every item of the set (both splits, rendered at the generator's size), the prompted one?
//!   Top-1 and top-5, with the chance level of a random ranking and the median rank beside them,
//!   so that a low figure can still be read. See [`RETRIEVAL_RULE`] for what counts as a hit.
//!
//! The generator is any closure from requests to images, so that the measurement does not
//! depend on one model type; it is called with at most [`DRAW_CHUNK`] requests at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vqrae_data::captioned::{CaptionedItem, CaptionedSet, CaptionedSplit};
use vqrae_generate::sample::ImageRequest;
use vqrae_tokenizer::fd_dinov2::FdProbe;
use vqrae_tokenizer::frechet::{frechet_distance, FeatureStats};

use crate::error::{EvalError, Result};

/// The most images one evaluation draws (both splits together): each costs a generation.
pub const MAX_IMAGES: usize = 10_000;
/// The most items the gallery may hold: each is rendered and encoded once.
pub const MAX_GALLERY: usize = 20_000;
/// The largest image side accepted from the generator and used to render the gallery.
pub const MAX_IMAGE_SIZE: u32 = 1024;
/// The most requests handed to the generator at once (it batches them).
pub const DRAW_CHUNK: usize = 64;
/// The `k` of the top-k retrieval figure beside top-1.
pub const TOP_K: usize = 5;

/// What counts as a retrieval hit, in words (copied into every report).
pub const RETRIEVAL_RULE: &str = "a generated image is compared, by cosine similarity of \
    DINOv2 class tokens, with every item of the set (both splits, each rendered at the \
    generator's image size); items are ranked by similarity, ties by item order; a hit at rank \
    k is a gallery item among the first k whose caption equals the prompt's caption exactly \
    (items sharing a caption cannot be told apart, so any of them counts)";

/// What [`evaluate_captioned`] draws.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptionedT2iOptions {
    /// Distinct training captions drawn: a subset chosen with `subset_seed`; 0 = all.
    pub train_captions: usize,
    /// Distinct held-out captions drawn (a subset likewise); 0 = all.
    pub held_out_captions: usize,
    /// Images per caption, with seeds `first_seed .. first_seed + images_per_caption`.
    pub images_per_caption: usize,
    /// The first seed: pick one the generator's training never used ("new seeds").
    pub first_seed: u64,
    /// The generator's image side in pixels; the gallery is rendered at it too.
    pub image_size: u32,
    /// Chooses the caption subsets.
    pub subset_seed: u64,
}

impl Default for CaptionedT2iOptions {
    /// 256 training captions and every held-out one, 4 images each from seed 1,000,000, at the
    /// DINOv2-S tokenizer's 112 px: about 1,800 images on the emoji set.
    fn default() -> Self {
        Self {
            train_captions: 256,
            held_out_captions: 0,
            images_per_caption: 4,
            first_seed: 1_000_000,
            image_size: 112,
            subset_seed: 0,
        }
    }
}

impl CaptionedT2iOptions {
    /// The seeds of each caption, after checking the sizes.
    fn seeds(&self) -> Result<Range<u64>> {
        if self.images_per_caption == 0 {
            return Err(EvalError::Config(
                "images per caption must be at least 1".into(),
            ));
        }
        if self.images_per_caption > MAX_IMAGES {
            return Err(too_many(self.images_per_caption));
        }
        if self.image_size == 0 || self.image_size > MAX_IMAGE_SIZE {
            return Err(EvalError::Config(format!(
                "image size {} is outside 1..={MAX_IMAGE_SIZE}",
                self.image_size
            )));
        }
        let end = self
            .first_seed
            .checked_add(self.images_per_caption as u64)
            .ok_or_else(|| {
                EvalError::Config("first seed + images per caption is past the largest seed".into())
            })?;
        Ok(self.first_seed..end)
    }
}

fn too_many(n: usize) -> EvalError {
    EvalError::Config(format!(
        "{n} images asked for, more than the {MAX_IMAGES} allowed"
    ))
}

/// Top-k retrieval of a set of generated images (see [`RETRIEVAL_RULE`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalScore {
    /// Generated images ranked.
    pub images: usize,
    /// Fraction whose nearest gallery item has the prompt's caption.
    pub top1: f64,
    /// Fraction with such an item among the nearest [`TOP_K`].
    pub top5: f64,
    /// The same fractions for a uniformly random ranking of the gallery (averaged over the
    /// images: higher for a caption several items share).
    pub chance_top1: f64,
    pub chance_top5: f64,
    /// Median rank (1 = nearest) of the best-ranked item with the prompt's caption.
    pub median_rank: f64,
}

/// One split's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptionedSplitReport {
    /// Distinct captions drawn, and how many the split offers.
    pub captions: usize,
    pub captions_available: usize,
    /// Generated images (captions x images per caption).
    pub images: usize,
    pub retrieval: RetrievalScore,
    /// FD-DINOv2 between the generated images and the real images of the same captions (the
    /// split's items that have them);
    /// `None` when either side has fewer than 2 images. With fewer images than the feature
    /// width (384 for DINOv2-S) the covariances are singular and FD is biased upwards: compare
    /// figures only at equal counts.
    pub fd_dinov2: Option<f64>,
    /// Real images in that comparison (the items with those captions).
    pub fd_real_images: usize,
}

/// What [`evaluate_captioned`] reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptionedT2iReport {
    /// The set's name ("emoji", "tuxpaint").
    pub source: String,
    /// Training captions on new seeds.
    pub train: CaptionedSplitReport,
    /// Captions of held-out items that no training item has.
    pub held_out: CaptionedSplitReport,
    /// Items ranked against (the whole set).
    pub gallery: usize,
    pub retrieval_rule: String,
    /// The DINOv2 encoder of both figures, its [`vqrae_data::fs::sha256_model`] and input size.
    pub fd_encoder: PathBuf,
    pub fd_encoder_sha256: String,
    pub fd_resolution: u32,
    pub image_size: u32,
    pub images_per_caption: usize,
    pub first_seed: u64,
    pub subset_seed: u64,
    /// Wall-clock time, the generator and probe already loaded.
    pub seconds: f64,
}

/// Draws the captions chosen by `opts` from `set` with `draw` and scores the images with
/// `probe`'s features (FD-DINOv2 and retrieval among every item of `set`, per split).
/// `draw` must return one `image_size` square image per request, in order.
pub fn evaluate_captioned(
    set: &CaptionedSet,
    probe: &FdProbe,
    opts: &CaptionedT2iOptions,
    draw: &mut dyn FnMut(&[ImageRequest]) -> Result<Vec<RgbImage>>,
) -> Result<CaptionedT2iReport> {
    let started = Instant::now();
    let seeds = opts.seeds()?;
    let choice = CaptionChoice::new(set, opts)?;
    let captions = choice.train.len() + choice.held_out.len();
    let total = captions
        .checked_mul(opts.images_per_caption)
        .filter(|&n| n <= MAX_IMAGES)
        .ok_or_else(|| too_many(captions.saturating_mul(opts.images_per_caption)))?;
    if set.len() > MAX_GALLERY {
        return Err(EvalError::Config(format!(
            "the gallery would hold {} items, more than the {MAX_GALLERY} allowed",
            set.len()
        )));
    }
    tracing::info!(
        gallery = set.len(),
        images = total,
        "captioned text-to-image"
    );
    let gallery = Gallery::new(set, probe, opts.image_size)?;
    let mut split = |which, captions: &[String], available| -> Result<CaptionedSplitReport> {
        let requests = ImageRequest::grid(captions, seeds.clone());
        let features = draw_features(&requests, probe, opts.image_size, draw)?;
        let prompts: Vec<String> = requests.into_iter().map(|r| r.caption).collect();
        gallery.score(which, &features, &prompts, available)
    };
    let train = split(CaptionedSplit::Train, &choice.train, choice.train_available)?;
    tracing::info!(top1 = train.retrieval.top1, fd = ?train.fd_dinov2, "training captions");
    let held_out = split(
        CaptionedSplit::HeldOut,
        &choice.held_out,
        choice.held_out_available,
    )?;
    tracing::info!(top1 = held_out.retrieval.top1, fd = ?held_out.fd_dinov2, "held-out captions");
    Ok(CaptionedT2iReport {
        source: set.source.name().to_string(),
        train,
        held_out,
        gallery: set.len(),
        retrieval_rule: RETRIEVAL_RULE.to_string(),
        fd_encoder: probe.dir.clone(),
        fd_encoder_sha256: probe.sha256.clone(),
        fd_resolution: probe.options.resolution,
        image_size: opts.image_size,
        images_per_caption: opts.images_per_caption,
        first_seed: opts.first_seed,
        subset_seed: opts.subset_seed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The distinct captions drawn per split.
struct CaptionChoice {
    train: Vec<String>,
    train_available: usize,
    held_out: Vec<String>,
    held_out_available: usize,
}

impl CaptionChoice {
    /// Distinct captions of each split (a held-out caption that a training item also has is
    /// not held out, and is left out), then the seeded subsets `opts` asks for.
    fn new(set: &CaptionedSet, opts: &CaptionedT2iOptions) -> Result<Self> {
        let captions_of = |split: CaptionedSplit| -> BTreeSet<&str> {
            set.split(split).map(|it| it.caption.as_str()).collect()
        };
        let train = captions_of(CaptionedSplit::Train);
        let held: Vec<String> = captions_of(CaptionedSplit::HeldOut)
            .difference(&train)
            .map(|c| c.to_string())
            .collect();
        let train: Vec<String> = train.into_iter().map(str::to_string).collect();
        let (train_available, held_out_available) = (train.len(), held.len());
        let name = set.source.name();
        Ok(Self {
            train: subset(
                train,
                opts.train_captions,
                opts.subset_seed,
                name,
                "training",
            )?,
            train_available,
            held_out: subset(
                held,
                opts.held_out_captions,
                opts.subset_seed,
                name,
                "held-out",
            )?,
            held_out_available,
        })
    }
}

/// `n` of the sorted, distinct `captions` chosen with `seed` (all of them for 0), sorted.
fn subset(
    mut captions: Vec<String>,
    n: usize,
    seed: u64,
    source: &str,
    what: &str,
) -> Result<Vec<String>> {
    if captions.is_empty() {
        return Err(EvalError::Config(format!(
            "the {source} set has no {what} captions"
        )));
    }
    if n > captions.len() {
        return Err(EvalError::Config(format!(
            "{n} {what} captions asked for; the {source} set has {}",
            captions.len()
        )));
    }
    if n > 0 {
        captions.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        captions.truncate(n);
        captions.sort();
    }
    Ok(captions)
}

/// Asks `draw` for `requests` in chunks of at most [`DRAW_CHUNK`] and keeps only the images'
/// features (10,000 images of 112 px would be 376 MB; their features are 15 MB).
fn draw_features(
    requests: &[ImageRequest],
    probe: &FdProbe,
    size: u32,
    draw: &mut dyn FnMut(&[ImageRequest]) -> Result<Vec<RgbImage>>,
) -> Result<Vec<Vec<f32>>> {
    let mut features = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(DRAW_CHUNK) {
        let images = draw(chunk)?;
        check_drawn(&images, chunk.len(), size)?;
        features.extend(probe.features(&images)?);
    }
    Ok(features)
}

/// Refuses a generator's answer that is not `asked` images of `size` x `size`.
fn check_drawn(images: &[RgbImage], asked: usize, size: u32) -> Result<()> {
    if images.len() != asked {
        return Err(EvalError::Config(format!(
            "the generator returned {} images for {asked} requests",
            images.len()
        )));
    }
    if let Some((i, img)) = images
        .iter()
        .enumerate()
        .find(|(_, img)| img.dimensions() != (size, size))
    {
        return Err(EvalError::Config(format!(
            "generated image {i} is {}x{}, not the {size}x{size} expected",
            img.width(),
            img.height()
        )));
    }
    Ok(())
}

/// Every item of a set, rendered and encoded once.
struct Gallery<'a> {
    items: &'a [CaptionedItem],
    captions: Vec<String>,
    features: Vec<Vec<f32>>,
}

impl<'a> Gallery<'a> {
    fn new(set: &'a CaptionedSet, probe: &FdProbe, size: u32) -> Result<Self> {
        let mut features = Vec::with_capacity(set.len());
        for chunk in set.items.chunks(DRAW_CHUNK) {
            let images = chunk
                .iter()
                .map(|it| set.item_image(it, size))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            features.extend(probe.features(&images)?);
        }
        Ok(Self {
            items: &set.items,
            captions: set.items.iter().map(|it| it.caption.clone()).collect(),
            features,
        })
    }

    /// The report of `split` for generated `features` prompted with `prompts`: retrieval among
    /// every item, FD against the items of `split` with those captions.
    fn score(
        &self,
        split: CaptionedSplit,
        features: &[Vec<f32>],
        prompts: &[String],
        available: usize,
    ) -> Result<CaptionedSplitReport> {
        let distinct: BTreeSet<&str> = prompts.iter().map(String::as_str).collect();
        let real: Vec<Vec<f32>> = self
            .items
            .iter()
            .zip(&self.features)
            .filter(|(it, _)| it.split == split && distinct.contains(it.caption.as_str()))
            .map(|(_, f)| f.clone())
            .collect();
        let fd_dinov2 = if real.len() >= 2 && features.len() >= 2 {
            let real = FeatureStats::from_features(&real)?;
            let fake = FeatureStats::from_features(features)?;
            Some(frechet_distance(&real, &fake)?)
        } else {
            None
        };
        Ok(CaptionedSplitReport {
            captions: distinct.len(),
            captions_available: available,
            images: features.len(),
            retrieval: retrieval(&self.features, &self.captions, features, prompts)?,
            fd_dinov2,
            fd_real_images: real.len(),
        })
    }
}

/// Ranks every gallery item for each query by cosine similarity (ties: lower gallery index
/// first) and scores the rank of the best-ranked item whose caption equals the query's
/// ([`RETRIEVAL_RULE`]). A zero vector has similarity 0 with everything. Errors on mismatched
/// lengths or widths, values that are not finite, an empty gallery or query list, and a query
/// caption no gallery item has.
pub fn retrieval(
    gallery: &[Vec<f32>],
    gallery_captions: &[String],
    queries: &[Vec<f32>],
    query_captions: &[String],
) -> Result<RetrievalScore> {
    check_vectors(gallery, gallery_captions, queries, query_captions)?;
    let units: Vec<Vec<f64>> = gallery.iter().map(|g| unit(g)).collect();
    let mut by_caption: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in gallery_captions.iter().enumerate() {
        by_caption.entry(c.as_str()).or_default().push(i);
    }
    let n = gallery.len();
    let (mut top1, mut topk, mut chance1, mut chancek) = (0usize, 0usize, 0.0, 0.0);
    let mut ranks = Vec::with_capacity(queries.len());
    for (q, caption) in queries.iter().zip(query_captions) {
        let matches = by_caption.get(caption.as_str()).ok_or_else(|| {
            EvalError::Config(format!("no gallery item has the caption {caption:?}"))
        })?;
        let q = unit(q);
        let sims: Vec<f64> = units.iter().map(|g| dot(g, &q)).collect();
        // the best-ranked match: highest similarity, then lowest index
        let mut best = matches[0];
        for &j in &matches[1..] {
            if sims[j] > sims[best] {
                best = j;
            }
        }
        let ahead = sims
            .iter()
            .enumerate()
            .filter(|&(i, &s)| s > sims[best] || (s == sims[best] && i < best))
            .count();
        let rank = ahead + 1;
        top1 += usize::from(rank == 1);
        topk += usize::from(rank <= TOP_K);
        chance1 += chance_in_top(n, matches.len(), 1);
        chancek += chance_in_top(n, matches.len(), TOP_K);
        ranks.push(rank);
    }
    let m = queries.len() as f64;
    Ok(RetrievalScore {
        images: queries.len(),
        top1: top1 as f64 / m,
        top5: topk as f64 / m,
        chance_top1: chance1 / m,
        chance_top5: chancek / m,
        median_rank: median(&mut ranks),
    })
}

/// The errors [`retrieval`] documents, checked before any work.
fn check_vectors(
    gallery: &[Vec<f32>],
    gallery_captions: &[String],
    queries: &[Vec<f32>],
    query_captions: &[String],
) -> Result<()> {
    if gallery.len() != gallery_captions.len() || queries.len() != query_captions.len() {
        return Err(EvalError::Config(format!(
            "retrieval: {} gallery vectors for {} captions, {} queries for {} captions",
            gallery.len(),
            gallery_captions.len(),
            queries.len(),
            query_captions.len()
        )));
    }
    if gallery.is_empty() || queries.is_empty() {
        return Err(EvalError::Config(
            "retrieval needs at least one gallery item and one query".into(),
        ));
    }
    let width = gallery[0].len();
    if let Some(v) = gallery.iter().chain(queries).find(|v| v.len() != width) {
        return Err(EvalError::Config(format!(
            "retrieval: a feature vector of width {}, the first has {width}",
            v.len()
        )));
    }
    if gallery
        .iter()
        .chain(queries)
        .any(|v| v.iter().any(|x| !x.is_finite()))
    {
        return Err(EvalError::Config(
            "retrieval: a feature value is not finite".into(),
        ));
    }
    Ok(())
}

/// `v / |v|` in f64; the zero vector stays zero.
fn unit(v: &[f32]) -> Vec<f64> {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|&x| f64::from(x) * scale).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The probability that a uniformly random order of `n` items puts at least one of `m` marked
/// items among its first `k`: `1 - C(n - m, k) / C(n, k)`.
fn chance_in_top(n: usize, m: usize, k: usize) -> f64 {
    let miss: f64 = (0..k.min(n))
        .map(|i| (n.saturating_sub(m + i)) as f64 / (n - i) as f64)
        .product();
    1.0 - miss
}

/// The median of `ranks` (the mean of the middle two for an even count); 0 for none.
fn median(ranks: &mut [usize]) -> f64 {
    ranks.sort_unstable();
    let n = ranks.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => ranks[n / 2] as f64,
        _ => (ranks[n / 2 - 1] + ranks[n / 2]) as f64 / 2.0,
    }
}

/// The emoji part of `eval-t2i` (with the `clap` feature, its flags; the field docs are their
/// help).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct EmojiFlags {
    /// Also draw emoji names (scripts/setup-captioned.sh installs them) and score the images
    /// by FD-DINOv2 and DINOv2-S retrieval among all emoji, at the first guidance scale.
    #[cfg_attr(feature = "clap", arg(long))]
    pub emoji: bool,
    /// Training captions drawn (a seeded subset; 0: all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub emoji_train_captions: usize,
    /// Held-out captions drawn (0: all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub emoji_held_out_captions: usize,
    /// Images per emoji caption.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2))]
    pub emoji_images: usize,
    /// The first seed of the emoji images (one the training never drew with).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1_000_000))]
    pub emoji_first_seed: u64,
    /// DINOv2 directory of the features; default `<data>/models/dinov2-small`.
    #[cfg_attr(feature = "clap", arg(long))]
    pub fd_encoder: Option<PathBuf>,
}

/// What the emoji part needs to run: where the set is installed, the DINOv2 directory, and
/// what to draw (its `image_size` is set from the model's tokenizer when it runs).
#[derive(Clone, Debug, PartialEq)]
pub struct EmojiEval {
    pub data_root: PathBuf,
    pub fd_encoder: PathBuf,
    pub options: CaptionedT2iOptions,
}

impl EmojiFlags {
    /// The emoji evaluation these flags ask for, on the data under `data_root`.
    pub fn eval(&self, data_root: &std::path::Path) -> Option<EmojiEval> {
        self.emoji.then(|| EmojiEval {
            data_root: data_root.to_path_buf(),
            fd_encoder: self
                .fd_encoder
                .clone()
                .unwrap_or_else(|| data_root.join("models").join("dinov2-small")),
            options: CaptionedT2iOptions {
                train_captions: self.emoji_train_captions,
                held_out_captions: self.emoji_held_out_captions,
                images_per_caption: self.emoji_images,
                first_seed: self.emoji_first_seed,
                ..CaptionedT2iOptions::default()
            },
        })
    }
}

impl EmojiEval {
    /// Opens the emoji set and the DINOv2 encoder, and scores what `draw` makes of their names
    /// at `image_size` px.
    pub fn run(
        &self,
        image_size: u32,
        draw: &mut dyn FnMut(&[ImageRequest]) -> Result<Vec<RgbImage>>,
    ) -> Result<CaptionedT2iReport> {
        let set = vqrae_data::captioned::CaptionedSource::Emoji
            .open(&self.data_root, &Default::default())?;
        let probe = FdProbe::load(
            &self.fd_encoder,
            vqrae_tokenizer::fd_dinov2::FdOptions::default(),
            &candle_core::Device::Cpu,
        )?;
        let options = CaptionedT2iOptions {
            image_size,
            ..self.options.clone()
        };
        evaluate_captioned(&set, &probe, &options, draw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use candle_core::Device;
    use image::{Rgb, Rgba, RgbaImage};
    use vqrae_data::captioned::{split_of, CaptionedOptions, CaptionedSource};
    use vqrae_tokenizer::fd_dinov2::FdOptions;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Seven 2-d gallery vectors; g3 and g5 share "cyan", g6 points as g0 does.
    fn gallery() -> (Vec<Vec<f32>>, Vec<String>) {
        let g = [
            [1.0, 0.0],
            [0.0, 1.0],
            [1.0, 1.0],
            [-1.0, 0.0],
            [0.0, -1.0],
            [-1.0, -1.0],
            [2.0, 0.0],
        ];
        let c = ["red", "blue", "purple", "cyan", "yellow", "cyan", "red2"];
        (g.iter().map(|v| v.to_vec()).collect(), strings(&c))
    }

    fn score(queries: &[[f32; 2]], captions: &[&str]) -> Result<RetrievalScore> {
        let (g, gc) = gallery();
        let q: Vec<Vec<f32>> = queries.iter().map(|v| v.to_vec()).collect();
        retrieval(&g, &gc, &q, &strings(captions))
    }

    #[test]
    fn retrieval_ranks_by_cosine_and_breaks_ties_by_index() -> Result<()> {
        // ranks: red2 2 (tied with g0, which comes first), red 1, red 3 (behind blue and
        // purple, first of the three at 0), cyan 6 (a miss: g5 at -0.71 is its best), cyan 1
        // (g5, the second item with the caption, counts)
        let s = score(
            &[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, -1.0]],
            &["red2", "red", "red", "cyan", "cyan"],
        )?;
        assert_eq!(s.images, 5);
        assert_eq!(s.top1, 0.4);
        assert_eq!(s.top5, 0.8);
        assert_eq!(s.median_rank, 2.0);
        // chance: 1/7 and 5/7 for a single item, 2/7 and 1 - 1/C(7,5) = 20/21 for cyan's two
        assert!((s.chance_top1 - 0.2).abs() < 1e-12, "{}", s.chance_top1);
        assert!(
            (s.chance_top5 - 17.0 / 21.0).abs() < 1e-12,
            "{}",
            s.chance_top5
        );
        // the first cyan item (g3) counts too; a zero query ties everything, so order decides
        assert_eq!(score(&[[-1.0, 0.0]], &["cyan"])?.top1, 1.0);
        let zero = score(&[[0.0, 0.0]], &["cyan"])?;
        assert_eq!((zero.top1, zero.top5, zero.median_rank), (0.0, 1.0, 4.0));
        // scale does not matter: g6 = 2 g0 ties with g0
        assert_eq!(score(&[[5.0, 0.0]], &["red"])?.top1, 1.0);
        Ok(())
    }

    #[test]
    fn retrieval_refuses_what_it_cannot_rank() {
        let err = |r: Result<RetrievalScore>| r.unwrap_err().to_string();
        assert!(err(score(&[[1.0, 0.0]], &["green"])).contains("\"green\""));
        assert!(err(score(&[[f32::NAN, 0.0]], &["red"])).contains("not finite"));
        assert!(err(score(&[], &[])).contains("at least one"));
        let (g, gc) = gallery();
        let e = retrieval(&g, &gc[1..], &[vec![1.0, 0.0]], &strings(&["red"]));
        assert!(err(e).contains("7 gallery vectors for 6 captions"));
        let e = retrieval(&g, &gc, &[vec![1.0, 0.0, 0.0]], &strings(&["red"]));
        assert!(err(e).contains("width 3"));
    }

    #[test]
    fn chance_and_median_are_exact() {
        assert!((chance_in_top(7, 2, 5) - 20.0 / 21.0).abs() < 1e-12);
        assert!((chance_in_top(1911, 1, 1) - 1.0 / 1911.0).abs() < 1e-15);
        assert_eq!(chance_in_top(3, 1, 5), 1.0);
        assert_eq!(chance_in_top(7, 0, 5), 0.0);
        assert_eq!(median(&mut [3, 1, 2]), 2.0);
        assert_eq!(median(&mut [4, 1, 2, 9]), 3.0);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn subsets_are_seeded_sorted_and_bounded() -> Result<()> {
        let all: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
        let a = subset(all.clone(), 10, 7, "emoji", "training")?;
        assert_eq!(a, subset(all.clone(), 10, 7, "emoji", "training")?);
        assert_ne!(a, subset(all.clone(), 10, 8, "emoji", "training")?);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|c| all.contains(c)));
        assert_eq!(subset(all.clone(), 0, 7, "emoji", "training")?, all);
        let e = subset(all, 51, 7, "emoji", "held-out")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("51 held-out captions") && e.contains("has 50"),
            "{e}"
        );
        let e = subset(vec![], 0, 7, "emoji", "held-out")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no held-out captions"), "{e}");
        Ok(())
    }

    #[test]
    fn options_and_drawn_images_are_bounded() {
        let bad = |f: fn(&mut CaptionedT2iOptions)| {
            let mut o = CaptionedT2iOptions::default();
            f(&mut o);
            o.seeds().unwrap_err().to_string()
        };
        assert!(bad(|o| o.images_per_caption = 0).contains("at least 1"));
        assert!(bad(|o| o.images_per_caption = 10_001).contains("10000 allowed"));
        assert!(bad(|o| o.image_size = 0).contains("image size 0"));
        assert!(bad(|o| o.image_size = 1025).contains("1..=1024"));
        assert!(bad(|o| o.first_seed = u64::MAX).contains("largest seed"));
        let seeds = CaptionedT2iOptions::default().seeds().unwrap();
        assert_eq!(seeds, 1_000_000..1_000_004);

        let img = |s| RgbImage::new(s, s);
        assert!(check_drawn(&[img(8), img(8)], 2, 8).is_ok());
        let e = check_drawn(&[img(8)], 2, 8).unwrap_err().to_string();
        assert!(e.contains("1 images for 2 requests"), "{e}");
        let e = check_drawn(&[img(8), img(9)], 2, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 1 is 9x9, not the 8x8"), "{e}");
    }

    /// Writes an emoji install under `root`: four training items ("gamma" twice), three
    /// held-out ones and a held-out "alpha" (a caption training has: not held out), each an 8x8
    /// image of its own colour and stripe. The ids are picked by their hashed split.
    fn tiny_emoji(root: &Path) -> anyhow::Result<()> {
        let dir = root.join("emoji");
        std::fs::create_dir_all(dir.join("64"))?;
        let pick = |split, n| {
            (0x1f600u32..0x1f800)
                .map(|c| format!("{c:x}"))
                .filter(|id| split_of(CaptionedSource::Emoji, id) == split)
                .take(n)
                .collect::<Vec<_>>()
        };
        let train = pick(CaptionedSplit::Train, 4);
        let held = pick(CaptionedSplit::HeldOut, 4);
        let names = [
            "ALPHA", "BETA", "GAMMA", "GAMMA", "DELTA", "EPSILON", "ZETA", "ALPHA",
        ];
        let mut entries = Vec::new();
        for (k, (id, name)) in train.iter().chain(&held).zip(names).enumerate() {
            entries.push(serde_json::json!({
                "name": name, "unified": id.to_uppercase(), "image": format!("{id}.png"),
                "has_img_google": true
            }));
            let k = k as u32;
            let img = RgbaImage::from_fn(8, 8, |x, y| {
                let stripe = if x == k || y == 7 - k { 60 } else { 0 };
                let c = |m: u32| ((k * m + stripe) % 256) as u8;
                Rgba([c(37), c(91), c(53), 255])
            });
            img.save(dir.join("64").join(format!("{id}.png")))?;
        }
        std::fs::write(dir.join("emoji.json"), serde_json::to_vec(&entries)?)?;
        Ok(())
    }

    fn tiny_probe() -> anyhow::Result<FdProbe> {
        let dir = vqrae_test_support::repo().join("tokenizer/tests/fixtures/dinov2_tiny");
        let opts = FdOptions {
            resolution: 16,
            batch: 4,
        };
        Ok(FdProbe::load(&dir, opts, &Device::Cpu)?)
    }

    const SIZE: u32 = 12;

    fn options(images_per_caption: usize) -> CaptionedT2iOptions {
        CaptionedT2iOptions {
            train_captions: 0,
            held_out_captions: 0,
            images_per_caption,
            first_seed: 500,
            image_size: SIZE,
            subset_seed: 0,
        }
    }

    #[test]
    fn drawing_the_real_images_scores_perfectly() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        tiny_emoji(root.path())?;
        let set = CaptionedSource::Emoji.open(root.path(), &CaptionedOptions::default())?;
        assert_eq!(set.counts(), (4, 4));
        let probe = tiny_probe()?;
        // the real image of each caption (its first item, in id order)
        let mut real = BTreeMap::new();
        for it in &set.items {
            if !real.contains_key(&it.caption) {
                real.insert(it.caption.clone(), set.item_image(it, SIZE)?);
            }
        }
        let mut draw = |reqs: &[ImageRequest]| -> Result<Vec<RgbImage>> {
            Ok(reqs.iter().map(|r| real[&r.caption].clone()).collect())
        };
        let r = evaluate_captioned(&set, &probe, &options(1), &mut draw)?;
        assert_eq!(r.source, "emoji");
        assert_eq!(r.gallery, 8);
        assert_eq!((r.train.captions, r.train.captions_available), (3, 3));
        assert_eq!((r.train.images, r.train.fd_real_images), (3, 4));
        // "alpha" is also a training caption: only delta, epsilon, zeta are held out
        assert_eq!((r.held_out.captions, r.held_out.captions_available), (3, 3));
        assert_eq!((r.held_out.images, r.held_out.fd_real_images), (3, 3));
        for s in [&r.train, &r.held_out] {
            assert_eq!((s.retrieval.top1, s.retrieval.top5), (1.0, 1.0));
            assert_eq!(s.retrieval.median_rank, 1.0);
        }
        // the same three images on both sides
        let fd = r.held_out.fd_dinov2.unwrap_or(f64::NAN);
        assert!(fd.abs() < 1e-4, "{fd}");
        assert_eq!(r.fd_resolution, 16);
        assert_eq!(r.fd_encoder_sha256, probe.sha256);
        let json = serde_json::to_value(&r)?;
        assert!(json["held_out"]["retrieval"]["top5"].is_number());
        Ok(())
    }

    #[test]
    fn a_constant_image_scores_low_and_draws_come_in_chunks() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        tiny_emoji(root.path())?;
        let set = CaptionedSource::Emoji.open(root.path(), &CaptionedOptions::default())?;
        let probe = tiny_probe()?;
        let mut calls = Vec::new();
        let mut seeds = BTreeSet::new();
        let mut draw = |reqs: &[ImageRequest]| -> Result<Vec<RgbImage>> {
            calls.push(reqs.len());
            seeds.extend(reqs.iter().map(|r| r.seed));
            assert!(reqs.iter().all(|r| r.negative.is_none()));
            Ok(vec![
                RgbImage::from_pixel(SIZE, SIZE, Rgb([128; 3]));
                reqs.len()
            ])
        };
        let r = evaluate_captioned(&set, &probe, &options(22), &mut draw)?;
        assert_eq!(calls, [64, 2, 64, 2]);
        assert_eq!(seeds, (500..522).collect());
        for s in [&r.train, &r.held_out] {
            assert_eq!(s.images, 66);
            // every image has one nearest item: at most one caption of three is found
            assert!(s.retrieval.top1 <= 1.0 / 3.0, "{:?}", s.retrieval);
            let fd = s.fd_dinov2.unwrap_or(f64::NAN);
            assert!(fd > 1e-3, "{fd}");
        }

        let mut wrong = |reqs: &[ImageRequest]| -> Result<Vec<RgbImage>> {
            Ok(vec![RgbImage::new(SIZE + 1, SIZE); reqs.len()])
        };
        let e = evaluate_captioned(&set, &probe, &options(1), &mut wrong).unwrap_err();
        assert!(e.to_string().contains("is 13x12, not the 12x12"), "{e}");
        let mut never = |_: &[ImageRequest]| -> Result<Vec<RgbImage>> {
            Err(EvalError::Config("drawn".into()))
        };
        let e = evaluate_captioned(&set, &probe, &options(2000), &mut never).unwrap_err();
        assert!(e.to_string().contains("12000 images"), "{e}");
        let mut opts = options(1);
        opts.train_captions = 4;
        let e = evaluate_captioned(&set, &probe, &opts, &mut never).unwrap_err();
        assert!(e.to_string().contains("4 training captions"), "{e}");
        Ok(())
    }
}
