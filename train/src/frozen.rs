//! A linear layer whose weights take no gradient (a frozen base under LoRA, the stage-1 teacher
//! behind the perceptual loss), differentiable in its input only.
//!
//! candle's matmul backward computes both operands' gradients whatever they track: under a
//! frozen weight every step pays one more gemm per projection (a third of a linear layer's
//! backward FLOPs) and keeps a weight-sized gradient nobody reads (540 MB for SmolLM2-135M).
//! Here the product is computed off the graph and re-attached to the input through a custom op
//! whose backward is the input's gradient alone, `dx = dy @ W`; its forward pass is one copy of
//! the product (a custom op must return a buffer it owns), O(rows x out) against the gemm's
//! O(rows x out x in) saved.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use candle_nn::{Linear, Module};

/// `l(x)` for a 2-D `x`, differentiable in `x` only, when `x` is tracked, the weight and bias
/// are not, and the computation is on the CPU; `None` otherwise (the caller runs the layer).
pub fn linear(l: &Linear, x: &Tensor) -> Result<Option<Tensor>> {
    let frozen = !l.weight().track_op() && l.bias().is_none_or(|b| !b.track_op());
    if !(frozen && x.track_op() && x.device().is_cpu() && x.rank() == 2) {
        return Ok(None);
    }
    let y = l.forward(&x.detach())?;
    let attach = Attach {
        product: y,
        weight: l.weight().clone(),
    };
    Ok(Some(x.apply_op1(attach)?))
}

/// Hands out the product computed off the graph; its backward multiplies by the weight.
struct Attach {
    product: Tensor,
    /// `(out, in)`.
    weight: Tensor,
}

impl CustomOp1 for Attach {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, _x: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.product.storage_and_layout();
        let Storage::Cpu(product) = &*storage else {
            candle_core::bail!("frozen-linear: the product is not on the CPU")
        };
        Ok((product.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.matmul(&self.weight)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_randn;
    use candle_core::{Device, Var};

    /// The same values and input gradient as the plain layer, and no gradient for the weight
    /// or bias; a trained (tracked) weight or an untracked input is left to the caller.
    #[test]
    fn the_input_gradient_alone_and_the_same_numbers() -> Result<()> {
        let dev = Device::Cpu;
        let w = seeded_randn((5, 7), 0.0, 0.5, 1, &dev)?;
        let b = seeded_randn(5, 0.0, 0.5, 2, &dev)?;
        let l = Linear::new(w.clone(), Some(b.clone()));
        let x = Var::from_tensor(&seeded_randn((6, 7), 0.0, 1.0, 3, &dev)?)?;
        let probe = seeded_randn((6, 5), 0.0, 1.0, 4, &dev)?;
        let y = linear(&l, x.as_tensor())?.expect("frozen on the cpu");
        let plain = l.forward(x.as_tensor())?;
        let diff = (&y - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        let g = (&y * &probe)?.sum_all()?.backward()?;
        let gp = (&plain * &probe)?.sum_all()?.backward()?;
        let e = (g.get(&x).expect("dx") - gp.get(&x).expect("dx"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(e < 1e-6, "dx differs by {e}");
        // the plain layer's backward also stores the (transposed) weight's and the bias's
        // gradients, under the ids of the tensors the matmul and the add saw: what this saves
        let weight_sized = |g: &candle_core::backprop::GradStore| {
            g.get_ids()
                .filter_map(|id| g.get_id(*id))
                .filter(|t| t.elem_count() == w.elem_count())
                .count()
        };
        assert_eq!(weight_sized(&g), 0);
        assert_eq!(weight_sized(&gp), 1);
        assert!(g.get(&w).is_none() && g.get(&b).is_none());
        assert!(linear(&l, &x.as_tensor().detach())?.is_none());
        let trained = Var::from_tensor(&w)?;
        let l = Linear::new(trained.as_tensor().clone(), None);
        assert!(linear(&l, x.as_tensor())?.is_none());
        Ok(())
    }
}
