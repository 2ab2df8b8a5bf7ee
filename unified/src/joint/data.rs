//! The frozen tokenizer's view of the training data ([`JointData`]): features and codes of
//! every training image, computed once before the first step, and the extra codes (mirrors,
//! shifted copies, procedural scenes) the phases may draw text-to-image examples from.

use candle_core::Tensor;
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vqrae_generate::augment;
use vqrae_tokenizer::Vqrae;

use crate::error::{Result, UnifiedError};

/// The frozen tokenizer's view of the training data, computed once.
pub struct JointData {
    /// Continuous features of every training image `(n_images, N, d)`.
    pub(crate) features: Tensor,
    /// Codes of every training image.
    pub codes: Vec<Vec<u32>>,
    /// Caption of every training image (`None`: not known; such images are not used for T2I).
    pub captions: Vec<Option<String>>,
    /// `(image index, question, answer)`.
    pub questions: Vec<(usize, String, String)>,
    /// Codes of every training image's left-right mirror, in the same order; empty unless
    /// [`JointData::with_mirrors`] added them (phases with `mirror_t2i` need them).
    pub mirror_codes: Vec<Vec<u32>>,
    /// Codes of shifted copies of the training images, copy `c` of image `i` at
    /// `c * n_images + i`; empty unless [`JointData::with_shifted_copies`] added them.
    pub shifted_codes: Vec<Vec<u32>>,
    /// Codes and captions of procedural scenes for the phases with `scene_t2i_batch`; empty
    /// unless [`JointData::with_scenes`] added them. They are text-to-image examples only and
    /// stay out of the BPE's corpus, so adding scenes to a run does not change its text
    /// tokenizer.
    pub scene_codes: Vec<Vec<u32>>,
    pub scene_captions: Vec<String>,
}

/// Features `(n, N, d)` and codes of `images`, encoded in batches of 64 by the frozen tokenizer.
fn encode_batches(tokenizer: &Vqrae, images: &[RgbImage]) -> Result<(Tensor, Vec<Vec<u32>>)> {
    let mut features = Vec::new();
    let mut codes = Vec::new();
    for chunk in images.chunks(64) {
        let enc = tokenizer.encode(&tokenizer.images_to_input(chunk)?)?;
        features.push(enc.features);
        codes.extend(enc.codes.to_vec2::<u32>()?);
    }
    Ok((Tensor::cat(&features, 0)?, codes))
}

impl JointData {
    /// Encodes images in batches of 64 with the frozen tokenizer.
    pub fn encode(
        tokenizer: &Vqrae,
        images: &[RgbImage],
        captions: Vec<Option<String>>,
        questions: Vec<(usize, String, String)>,
    ) -> Result<Self> {
        if images.is_empty() || captions.len() != images.len() {
            return Err(UnifiedError::Config(format!(
                "{} images for {} captions",
                images.len(),
                captions.len()
            )));
        }
        if let Some((i, _, _)) = questions.iter().find(|(i, _, _)| *i >= images.len()) {
            return Err(UnifiedError::Config(format!(
                "a question refers to image {i}"
            )));
        }
        let (features, codes) = encode_batches(tokenizer, images)?;
        Ok(Self {
            features,
            codes,
            captions,
            questions,
            mirror_codes: Vec::new(),
            shifted_codes: Vec::new(),
            scene_codes: Vec::new(),
            scene_captions: Vec::new(),
        })
    }

    /// Adds the codes of each image's left-right mirror (`images`: the ones given to
    /// [`JointData::encode`], in the same order), for the phases with `mirror_t2i`.
    pub fn with_mirrors(mut self, tokenizer: &Vqrae, images: &[RgbImage]) -> Result<Self> {
        if images.len() != self.codes.len() {
            return Err(UnifiedError::Config(format!(
                "{} images to mirror for {} encoded",
                images.len(),
                self.codes.len()
            )));
        }
        let mirrored: Vec<_> = images
            .iter()
            .map(image::imageops::flip_horizontal)
            .collect();
        self.mirror_codes = encode_batches(tokenizer, &mirrored)?.1;
        Ok(self)
    }

    /// Adds the codes of `copies` shifted copies of each image (`images`: the ones given to
    /// [`JointData::encode`], in the same order), for the phases with `shifted_copies`. Copy `c` of
    /// image `i` draws its placement from a generator seeded by `(seed, c, i)`, so the copies do
    /// not depend on how many there are or on the order they are made in.
    pub fn with_shifted_copies(
        mut self,
        tokenizer: &Vqrae,
        images: &[RgbImage],
        copies: usize,
        seed: u64,
    ) -> Result<Self> {
        if images.len() != self.codes.len() {
            return Err(UnifiedError::Config(format!(
                "{} images to shift for {} encoded",
                images.len(),
                self.codes.len()
            )));
        }
        self.shifted_codes.clear();
        for c in 0..copies as u64 {
            let shifted: Vec<_> = images
                .iter()
                .enumerate()
                .map(|(i, img)| {
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        seed ^ 0x5_41f7
                            ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                            ^ ((i as u64) << 20),
                    );
                    augment::random_placement(img, &mut rng)
                })
                .collect();
            self.shifted_codes
                .extend(encode_batches(tokenizer, &shifted)?.1);
        }
        Ok(self)
    }

    /// Adds procedural scenes (`images`, their renders, and `captions`), encoded by the frozen
    /// tokenizer, for the phases with `scene_t2i_batch`.
    pub fn with_scenes(
        mut self,
        tokenizer: &Vqrae,
        images: &[RgbImage],
        captions: Vec<String>,
    ) -> Result<Self> {
        if images.is_empty() || images.len() != captions.len() {
            return Err(UnifiedError::Config(format!(
                "{} scene images for {} captions",
                images.len(),
                captions.len()
            )));
        }
        self.scene_codes = encode_batches(tokenizer, images)?.1;
        self.scene_captions = captions;
        Ok(self)
    }

    /// The texts the BPE learns from: captions, questions, answers.
    pub(crate) fn corpus(&self) -> impl Iterator<Item = &str> {
        self.captions.iter().flatten().map(String::as_str).chain(
            self.questions
                .iter()
                .flat_map(|(_, q, a)| [q.as_str(), a.as_str()]),
        )
    }
}
