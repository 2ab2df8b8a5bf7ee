//! The visual questions a pretrained LM is taught and tested on: easy-VQA and the procedural
//! scenes, each question with its exact answer word and the sentence that teaches it
//! ([`vqrae_understand::sentences`]), and the DINOv2 features of their images, computed once.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use vqrae_data::easy_vqa::{EasyVqa, Split};
use vqrae_data::scenes::{questions, render, SceneDataset, Skill};
use vqrae_tokenizer::encoder::HfEncoder;
use vqrae_tokenizer::preprocess::{Preprocess, Resize};
use vqrae_understand::sentences::{color_question_subject, sentence, AnswerKind};

use crate::error::{Result, UnifiedError};

/// Where a question comes from, and for scenes the skill it tests (the figures are per skill).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    EasyVqa,
    Scene(Skill),
}

/// One question about image `image` of its [`VqaSet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VqaItem {
    pub image: usize,
    pub question: String,
    /// The exact answer word ("red", "two", "yes").
    pub answer: String,
    pub kind: AnswerKind,
    pub source: Source,
}

impl VqaItem {
    /// The sentence the model is taught to answer with.
    pub fn target(&self) -> String {
        let subject = match self.kind {
            AnswerKind::Color => color_question_subject(&self.question),
            _ => None,
        };
        sentence(self.kind, &self.answer, subject.as_deref())
    }
}

/// Images and the questions about them.
#[derive(Clone, Debug, Default)]
pub struct VqaSet {
    pub images: Vec<RgbImage>,
    pub items: Vec<VqaItem>,
}

impl VqaSet {
    /// The easy-VQA split at `root` (its first `limit` images and their questions; 0: all).
    pub fn easy_vqa(root: &Path, split: Split, limit: usize) -> Result<Self> {
        let ds = EasyVqa::load(root, split)?;
        let n = match limit {
            0 => ds.images.len(),
            l => l.min(ds.images.len()),
        };
        let images = ds.load_images(&(0..n).collect::<Vec<_>>())?;
        let index: std::collections::HashMap<usize, usize> = ds.images[..n]
            .iter()
            .enumerate()
            .map(|(i, im)| (im.id, i))
            .collect();
        let items = ds
            .questions
            .iter()
            .filter_map(|q| {
                index.get(&q.image_id).map(|&image| VqaItem {
                    image,
                    question: q.question.clone(),
                    answer: q.answer.clone(),
                    kind: q.kind.into(),
                    source: Source::EasyVqa,
                })
            })
            .collect();
        Ok(Self { images, items })
    }

    /// The project's fixed `split` of `n` procedural scenes, with every question each scene
    /// answers unambiguously.
    pub fn scenes(split: Split, n: usize) -> Self {
        let ds = SceneDataset::split(split, n);
        let mut set = Self::default();
        for (i, scene) in ds.scenes.iter().enumerate() {
            set.images.push(render(&ds.cfg, scene));
            set.items
                .extend(questions(scene).into_iter().map(|q| VqaItem {
                    image: i,
                    question: q.question,
                    answer: q.answer,
                    kind: q.skill.into(),
                    source: Source::Scene(q.skill),
                }));
        }
        set
    }

    /// `self` followed by `other`, its image indices shifted.
    pub fn concat(mut self, other: VqaSet) -> Self {
        let offset = self.images.len();
        self.images.extend(other.images);
        self.items.extend(other.items.into_iter().map(|mut it| {
            it.image += offset;
            it
        }));
        self
    }
}

/// DINOv2 preprocessing at `resolution` without the centre crop: the data's images are small
/// and their objects reach the borders, so they are resized whole.
pub fn preprocess_at(encoder: &HfEncoder, resolution: u32) -> Preprocess {
    Preprocess {
        resize: Resize::Exact {
            height: resolution,
            width: resolution,
        },
        normalize: encoder.preprocess.normalize,
    }
}

/// The frozen encoder's patch features `(N, tokens, width)` of `images`, in f32 on `device`,
/// computed `batch` images at a time.
pub fn encode_features(
    encoder: &HfEncoder,
    pre: &Preprocess,
    images: &[RgbImage],
    batch: usize,
    device: &Device,
) -> Result<Tensor> {
    if images.is_empty() {
        return Err(UnifiedError::Config("no images to encode".into()));
    }
    let prefix = encoder.encoder.prefix_tokens();
    let mut parts = Vec::new();
    for chunk in images.chunks(batch.max(1)) {
        let x = pre.to_tensor(chunk, device)?;
        let hidden = encoder.encoder.forward(&x, false)?;
        let n = hidden.dim(1)? - prefix;
        parts.push(hidden.narrow(1, prefix, n)?.to_dtype(DType::F32)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}
