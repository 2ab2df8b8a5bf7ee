//! `vqrae`: the one command-line entry point of vqrae-rs. Thin: parses arguments, calls the
//! crates, prints results.

mod commands;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::{chat, data, eval, llava, lm, plot, probe, referee, scale, serve, tokenizer, train};
use vqrae_bench as bench;

/// candle allocates a fresh buffer for every op; glibc's allocator hands large ones back to the
/// kernel at once, so training spent a third of its time in page faults. mimalloc keeps them
/// (2x on the easy-VQA encoder's training step), without purging (`prepare_process`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vqrae",
    version,
    about = "VQRAE: one image tokenizer for multimodal understanding (continuous features), \
             generation (discrete codes) and reconstruction"
)]
struct Cli {
    /// Where computation runs: `cpu`, or `cuda` (needs a build with `--features cuda`).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    /// Data root (installed by `vqrae data setup`); default `$VQRAE_DATA` or `./.data`.
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install or inspect the data sets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Continuous features (last-layer patch tokens) of a Hugging Face encoder directory.
    Features(tokenizer::FeaturesArgs),
    /// Create an untrained tokenizer checkpoint from a config (optionally with a pretrained encoder).
    Init(tokenizer::InitArgs),
    /// Codes grid and feature shape of images, as JSON (one object per image, one per line).
    Tokenize(tokenizer::TokenizeArgs),
    /// Encode to codes and decode back to pixels.
    Reconstruct(tokenizer::ReconstructArgs),
    /// Linear probe on frozen encoder features (a pretrained encoder vs a random one).
    Probe(probe::ProbeArgs),
    /// Pretrain the project's own ViT encoder: attribute classification and figure-ground
    /// segmentation on training images only.
    PretrainEncoder(vqrae_tokenizer::runs::EncoderPretraining),
    /// Train a tokenizer: stage 1 (encoder frozen) or stage 2 (encoder distilled); resumes a run.
    TrainTokenizer(vqrae_tokenizer::runs::TokenizerTrainingFlags),
    /// PSNR, SSIM, codebook utilisation / perplexity and feature cosine on held-out images.
    EvalTokenizer(train::EvalArgs),
    /// FD-DINOv2: Fréchet distance of DINOv2-S class tokens, real vs reconstructed images.
    FdDinov2(vqrae_tokenizer::fd_dinov2::FdRequest),
    /// Training curves of one or more runs (their `metrics.jsonl`) to PNG.
    Plot(plot::PlotArgs),
    /// Train the one LM jointly on VQA (continuous features) and text-to-image (codes), in
    /// phases; writes a model directory that serves both paths.
    TrainLm(lm::TrainLmArgs),
    /// Answer a question about an image (continuous path).
    Ask(lm::AskArgs),
    /// Generate images from a caption (discrete path, classifier-free guidance).
    Generate(lm::GenerateArgs),
    /// Chat with a GGUF language model (SmolLM2-135M-Instruct): one message, the reply streamed.
    Chat(chat::ChatArgs),
    /// Train the LLaVA recipe on a pretrained LM: DINOv2 features -> projector -> a GGUF chat
    /// LM with LoRA (phase 1 the projector, phase 2 both); writes RUN/model.
    TrainLlava(llava::TrainLlavaArgs),
    /// Score a LLaVA model: easy-VQA and held-out scene questions, and its text ability
    /// beside its base's.
    EvalLlava(llava::EvalLlavaArgs),
    /// Exact-match VQA accuracy on easy-VQA, per question kind.
    EvalVqa(eval::EvalVqaArgs),
    /// Text-to-image judged by the referee: colour and shape right, per guidance scale.
    EvalT2i(eval::EvalT2iArgs),
    /// Scaling sweep: a family of LM sizes on cached codes, fits of L(N) and L(C), the
    /// prediction for the next size checked by training it, and a codebook sweep.
    Scale(scale::ScaleArgs),
    /// Train the referee (a small CNN reading colour and shape) on real easy-VQA images;
    /// it qualifies to judge generated images at 99% on the real test split.
    TrainReferee(referee::TrainRefereeArgs),
    /// The referee's accuracy on real images and, with --tokenizer, on their reconstructions.
    EvalReferee(referee::EvalRefereeArgs),
    /// The HTTP API: OpenAI-compatible image generation and chat (questions about an image),
    /// tokenize and reconstruction endpoints, metrics and a web page; 127.0.0.1:8080 by default.
    Serve(serve::ServeArgs),
    /// Benchmarks of the hot paths, one row per process, against the PyTorch reference
    /// (`scripts/bench.sh` runs the set; docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(bench::rows::BenchCommand),
    /// Load benchmark of a running `vqrae serve`: requests/s and latency percentiles of image
    /// generation and chat at several concurrencies (docs/SERVING.md).
    BenchServe(bench::serve::BenchServeArgs),
}

fn main() -> Result<()> {
    vqrae_train::device::prepare_process();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // colour codes only for a terminal: in a file or a journal they are noise
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let data_root = cli.data.unwrap_or_else(vqrae_data::default_root);
    let device = commands::device(&cli.device)?;
    match cli.command {
        Command::Data(cmd) => data::run(cmd, &data_root),
        Command::Features(a) => tokenizer::features(a, &device),
        Command::Init(a) => tokenizer::init(a, &device),
        Command::Tokenize(a) => tokenizer::tokenize(a, &device),
        Command::Reconstruct(a) => tokenizer::reconstruct(a, &device),
        Command::Probe(a) => probe::run(a, &data_root, &device),
        Command::PretrainEncoder(a) => train::pretrain(a, &data_root, &device),
        Command::TrainTokenizer(a) => train::train_tokenizer(a, &data_root, &device),
        Command::EvalTokenizer(a) => train::eval_tokenizer(a, &data_root, &device),
        Command::FdDinov2(a) => commands::fd::run(a, &data_root, &device),
        Command::Plot(a) => plot::run(a),
        Command::TrainLm(a) => lm::train_lm(a, &data_root, &device),
        Command::Ask(a) => lm::ask(a, &device),
        Command::Generate(a) => lm::generate(a, &device),
        Command::Chat(a) => chat::run(a, &device),
        Command::TrainLlava(a) => llava::train(a, &data_root, &device),
        Command::EvalLlava(a) => llava::eval(a, &data_root, &device),
        Command::EvalVqa(a) => eval::eval_vqa(a, &data_root, &device),
        Command::EvalT2i(a) => eval::eval_t2i(a, &data_root, &device),
        Command::Scale(a) => scale::run(a, &data_root, &device),
        Command::TrainReferee(a) => referee::train_referee(a, &data_root, &device),
        Command::EvalReferee(a) => referee::eval_referee(a, &data_root, &device),
        Command::Serve(a) => serve::run(a, &device),
        Command::Bench(bench::rows::BenchCommand::Init(a)) => bench::rows::init(a, &device),
        Command::Bench(bench::rows::BenchCommand::Run(a)) => bench::rows::run(a, &device),
        Command::BenchServe(a) => bench::serve::run(a),
    }
}
