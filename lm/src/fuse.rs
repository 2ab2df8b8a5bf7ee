//! Inference-only weight fusion ([`Llama::fuse_for_inference`]): each layer's q/k/v weights
//! stacked into one matrix, and on the CPU contiguous transposed copies of the projections
//! (`Proj`). Kept apart from the layers because none of it changes the weights or the
//! architecture, only how inference multiplies by them; the fused copies are not the training
//! variables, so a fused model refuses training mode.

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};
use candle_nn::Linear;

use crate::error::{LmError, Result};
use crate::lora::LoraLinear;
use crate::model::Llama;

/// What a [`Proj`] multiplies by: a dense `(out, in)` weight (checkpoints, training, the
/// dequantized GGUF form), or a GGUF's quantized blocks (`QMatMul`, inference only).
#[derive(Clone, Debug)]
enum ProjWeight {
    Dense(Linear),
    Quantized(QMatMul),
}

/// How a quantized projection multiplies an input of several rows.
///
/// candle's quantized CPU kernel quantizes each input row to 8 bits and makes one pass over the
/// weight's blocks per row, so its cost grows with the rows as fast as decoding them one by one:
/// a 105-token prefill through SmolLM2-135M's Q4_1 blocks took 24x the f32 model's time. A
/// transient f32 copy of the weight (dequantized for the call, dropped after it) costs one pass
/// over the blocks and then runs at gemm speed. `cargo run --release -p vqrae-lm --example
/// quantized_rows` (2 cores, SmolLM2's seven projection shapes, one layer): the kernel costs
/// 0.78 ms per row, dequantizing and gemm 3.3-3.5 ms for 4 to 8 rows (kernel 3.1 ms at 4 rows,
/// 6.2 ms at 8), so the two break even at about 4.3 rows; at one row the kernel, which reads 4.5
/// bits per weight instead of writing 32, wins decoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuantizedRows {
    /// The quantized kernel for every input: llama.cpp's numerics (8-bit activations), what
    /// candle-transformers' `quantized_llama` computes.
    Kernel,
    /// On the CPU, inputs of [`DEQUANTIZE_FROM_ROWS`] rows or more (prefills, batched decoding)
    /// multiply a transient f32 copy of the weight, with f32 activations, so their logits are
    /// the dequantized model's; fewer rows keep the kernel. Memory stays the quantized model's
    /// plus one f32 matrix at a time.
    #[default]
    DequantizeBatches,
}

/// The fewest rows for which [`QuantizedRows::DequantizeBatches`] dequantizes (see there).
pub const DEQUANTIZE_FROM_ROWS: usize = 5;

/// A bias-free projection `x @ W^T` with `W` `(out, in)`, dense or quantized. Once
/// [`Self::keep_transposed`] (inference on the CPU, dense only) it also holds a contiguous
/// `(in, out)` copy of `W` and multiplies inputs of more than one row by it: gemm multiplies
/// 2-32 rows by a contiguous matrix 1.1-4x faster than by the transposed view of `W`
/// (docs/PERFORMANCE.md); for one row the view, a row of dot products, is the faster one.
#[derive(Clone, Debug)]
pub(crate) struct Proj {
    weight: ProjWeight,
    transposed: Option<Tensor>,
    /// How a quantized weight multiplies several rows (unused for a dense one).
    rows: QuantizedRows,
    /// A low-rank side path added to the output ([`Llama::attach_adapters`]); its tensors are
    /// the adapters' variables, so training them needs no rebuild.
    lora: Option<LoraLinear>,
}

impl Proj {
    pub(crate) fn new(linear: Linear) -> Self {
        Self {
            weight: ProjWeight::Dense(linear),
            transposed: None,
            rows: QuantizedRows::default(),
            lora: None,
        }
    }

    /// A projection over quantized blocks (rows already in HF order, see [`crate::gguf`]).
    pub(crate) fn quantized(matmul: QMatMul) -> Self {
        Self {
            weight: ProjWeight::Quantized(matmul),
            transposed: None,
            rows: QuantizedRows::default(),
            lora: None,
        }
    }

    /// The dense `(out, in)` weight; `None` for a quantized projection (see
    /// [`Self::dense_weight`]).
    pub(crate) fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            ProjWeight::Dense(l) => Some(l.weight()),
            ProjWeight::Quantized(_) => None,
        }
    }

    pub(crate) fn is_quantized(&self) -> bool {
        matches!(self.weight, ProjWeight::Quantized(QMatMul::QTensor(_)))
    }

    /// The `(out, in)` weight as a dense tensor: the dense weight itself (shared storage), or
    /// the quantized one dequantized to f32 on its device (a copy).
    pub(crate) fn dense_weight(&self) -> candle_core::Result<Tensor> {
        match &self.weight {
            ProjWeight::Dense(l) => Ok(l.weight().clone()),
            ProjWeight::Quantized(QMatMul::QTensor(q)) => q.dequantize(&q.device()),
            ProjWeight::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => Ok(w.clone()),
        }
    }

    /// Keeps a contiguous transposed copy of a dense weight; a quantized projection is left
    /// as it is (candle's quantized matmul lays out its blocks itself).
    fn keep_transposed(&mut self) -> candle_core::Result<()> {
        if let ProjWeight::Dense(l) = &self.weight {
            self.transposed = Some(l.weight().t()?.contiguous()?);
        }
        Ok(())
    }

    pub(crate) fn set_quantized_rows(&mut self, rows: QuantizedRows) {
        self.rows = rows;
    }

    pub(crate) fn set_lora(&mut self, lora: Option<LoraLinear>) {
        self.lora = lora;
    }

    pub(crate) fn has_lora(&self) -> bool {
        self.lora.is_some()
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.base_forward(x)?;
        match &self.lora {
            Some(lora) => {
                y + lora
                    .delta(x)
                    .map_err(|e| candle_core::Error::Msg(format!("lora side path: {e}")))?
            }
            None => Ok(y),
        }
    }

    fn base_forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match (&self.weight, &self.transposed) {
            (ProjWeight::Dense(_), Some(w_t))
                if x.elem_count() > x.dim(candle_core::D::Minus1)? =>
            {
                x.broadcast_matmul(w_t)
            }
            // training: a frozen base's weight takes no gradient (`ops::linear`)
            (ProjWeight::Dense(l), _) if x.track_op() => vqrae_train::ops::linear(l, x),
            (ProjWeight::Dense(l), _) => l.forward(x),
            (ProjWeight::Quantized(QMatMul::QTensor(q)), _)
                if self.rows == QuantizedRows::DequantizeBatches
                    && x.device().is_cpu()
                    && x.elem_count() / x.dim(candle_core::D::Minus1)? >= DEQUANTIZE_FROM_ROWS =>
            {
                let w = q.dequantize(x.device())?.to_dtype(x.dtype())?;
                x.broadcast_matmul(&w.t()?)
            }
            // the quantized kernels read their input as one contiguous (rows, in) block
            (ProjWeight::Quantized(q), _) => q.forward(&x.contiguous()?),
        }
    }
}

/// The weights of `parts` stacked along the output axis, and each part again as a view into it;
/// `None` when a part is quantized (nothing to stack) or carries an adapter's side path
/// (merge the adapters first: [`Llama::merge_adapters`]).
fn stack(parts: &[&Proj]) -> candle_core::Result<Option<(Proj, Vec<Proj>)>> {
    if parts.iter().any(|p| p.has_lora()) {
        return Ok(None);
    }
    let Some(weights) = parts
        .iter()
        .map(|p| p.weight())
        .collect::<Option<Vec<&Tensor>>>()
    else {
        return Ok(None);
    };
    let stacked = Tensor::cat(&weights, 0)?;
    let mut start = 0;
    let mut views = Vec::with_capacity(parts.len());
    for w in weights {
        let n = w.dim(0)?;
        views.push(Proj::new(Linear::new(stacked.narrow(0, start, n)?, None)));
        start += n;
    }
    Ok(Some((Proj::new(Linear::new(stacked, None)), views)))
}

impl Llama {
    /// Chooses how every quantized projection multiplies several rows (see [`QuantizedRows`];
    /// a loaded quantized model starts with the default). No effect on dense projections.
    pub fn set_quantized_rows(&mut self, rows: QuantizedRows) {
        for layer in &mut self.layers {
            let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
            for p in [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ] {
                p.set_quantized_rows(rows);
            }
            if let Some(qkv) = &mut a.qkv {
                qkv.set_quantized_rows(rows);
            }
        }
        self.lm_head.set_quantized_rows(rows);
    }

    /// Stacks each layer's q/k/v weights into one matrix, so that inference runs one matmul
    /// where it ran three (fewer calls, a wider matrix: what decoding a few rows at a time is
    /// bound by; the three outputs are split by the head reshape, which copies anyway). The
    /// separate weights become views into the stacked ones (no second copy), so saving and
    /// [`Self::tensors`] are unchanged. On the CPU every projection and the output head also
    /// keep a contiguous transposed copy, which gemm multiplies faster when more than one row
    /// comes at a time (`Proj`); this doubles the weights' memory there. The stacked and
    /// transposed matrices are copies, not the variables: a fused model refuses training mode.
    ///
    /// On a quantized model ([`Self::is_quantized`]) the quantized projections are kept as they
    /// are (no stacking, no transposed copies: candle's quantized matmul lays out its blocks
    /// itself), so fusing changes nothing but the flag; such a model refuses training anyway.
    pub fn fuse_for_inference(&mut self) -> Result<()> {
        let cpu = self.device().is_cpu();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let ctx = |e| LmError::candle(format!("fusing layer {l}"), e);
            let a = &mut layer.self_attn;
            let Some((mut qkv, parts)) = stack(&[&a.q_proj, &a.k_proj, &a.v_proj]).map_err(ctx)?
            else {
                continue;
            };
            if let [q, k, v] = parts.as_slice() {
                (a.q_proj, a.k_proj, a.v_proj) = (q.clone(), k.clone(), v.clone());
            }
            if cpu {
                let m = &mut layer.mlp;
                for p in [
                    &mut qkv,
                    &mut a.o_proj,
                    &mut m.gate_proj,
                    &mut m.up_proj,
                    &mut m.down_proj,
                ] {
                    p.keep_transposed().map_err(ctx)?;
                }
            }
            a.qkv = Some(qkv);
        }
        if cpu {
            self.lm_head
                .keep_transposed()
                .map_err(|e| LmError::candle("fusing the output head", e))?;
        }
        self.fused = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Module, Tensor};

    use super::*;

    /// Below the threshold a quantized projection is candle's kernel exactly; from it on, the
    /// product by the dequantized blocks exactly; `Kernel` keeps the kernel at every size.
    #[test]
    fn quantized_rows_switch_at_the_threshold() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (48, 64), &dev)?;
        let q = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4_1)?)?;
        let dense = match &q {
            QMatMul::QTensor(t) => t.dequantize(&dev)?,
            _ => candle_core::bail!("Q4_1 stays quantized"),
        };
        let mut proj = Proj::quantized(q.clone());
        let same = |a: &Tensor, b: &Tensor| -> candle_core::Result<bool> {
            Ok(a.sub(b)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0)
        };
        for rows in [
            1,
            DEQUANTIZE_FROM_ROWS - 1,
            DEQUANTIZE_FROM_ROWS,
            2 * DEQUANTIZE_FROM_ROWS,
        ] {
            let x = Tensor::randn(0f32, 1.0, (1, rows, 64), &dev)?;
            let kernel = q.forward(&x)?;
            let via_f32 = x.broadcast_matmul(&dense.t()?)?;
            assert!(
                !same(&kernel, &via_f32)?,
                "the two paths must differ to be told apart"
            );
            let expected = if rows >= DEQUANTIZE_FROM_ROWS {
                &via_f32
            } else {
                &kernel
            };
            assert!(same(&proj.forward(&x)?, expected)?, "{rows} rows");
            proj.set_quantized_rows(QuantizedRows::Kernel);
            assert!(
                same(&proj.forward(&x)?, &kernel)?,
                "{rows} rows, kernel only"
            );
            proj.set_quantized_rows(QuantizedRows::DequantizeBatches);
        }
        Ok(())
    }
}
