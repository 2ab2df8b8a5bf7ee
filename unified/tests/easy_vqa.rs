//! `JointData::from_easy_vqa` on a miniature easy-VQA installation: the first `limit` images
//! with their captions and questions, and the mirrors, shifted copies and scenes the config
//! asks for.

use anyhow::Result;
use vqrae_data::easy_vqa::{load_split, Split};
use vqrae_test_support::{mini_easy_vqa, save_tiny_tokenizer, tiny_joint_config, toy_data};
use vqrae_unified::joint::JointData;

#[test]
fn easy_vqa_data_holds_the_first_images_and_what_the_phases_draw_on() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let tok = save_tiny_tokenizer(&tmp.path().join("tok"))?;
    mini_easy_vqa(tmp.path(), 6, 2)?;
    let ds = load_split(tmp.path(), Split::Train)?;
    let mut cfg = tiny_joint_config()?;

    // the tiny config asks for nothing past the images
    let all = JointData::from_easy_vqa(&cfg, &ds, 0, &tok)?;
    assert_eq!(all.codes.len(), 6);
    assert!(all.mirror_codes.is_empty() && all.shifted_codes.is_empty());
    assert!(all.scene_codes.is_empty());

    cfg.phases[0].mirror_t2i = true;
    cfg.phases[0].shifted_copies = 2;
    cfg.scenes = 3;
    cfg.validate()?;
    let data = JointData::from_easy_vqa(&cfg, &ds, 4, &tok)?;
    // the first four images, their captions and only their questions
    let toy = toy_data(4);
    assert_eq!(data.captions, toy.captions);
    assert_eq!(data.questions, toy.questions);
    // the same codes as encoding them by hand
    let by_hand = JointData::encode(&tok, &toy.images, toy.captions, toy.questions)?
        .with_mirrors(&tok, &toy.images)?
        .with_shifted_copies(&tok, &toy.images, 2, cfg.seed)?;
    assert_eq!(data.codes, by_hand.codes);
    assert_eq!(data.mirror_codes, by_hand.mirror_codes);
    assert_eq!(data.shifted_codes, by_hand.shifted_codes);
    // three training scenes, each with its mirror
    assert_eq!(data.scene_codes.len(), 6);
    assert_eq!(data.scene_captions.len(), 6);

    // a limit past the split takes it all
    assert_eq!(
        JointData::from_easy_vqa(&cfg, &ds, 99, &tok)?.codes.len(),
        6
    );
    Ok(())
}
