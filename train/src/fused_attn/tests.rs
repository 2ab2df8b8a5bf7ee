use super::*;
use crate::cpu_kernel::max_rel;
use crate::init::seeded_randn;
use candle_core::{DType, Var, D};

/// The composition the kernel replaces: HF's `repeat_kv`, scores, mask add, softmax, product.
fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    let (kv, s) = (k.dim(1)?, k.dim(2)?);
    let repeat = |x: &Tensor| -> Result<Tensor> {
        x.unsqueeze(2)?
            .broadcast_as((b, kv, h / kv, s, hd))?
            .contiguous()?
            .reshape((b, h, s, hd))
    };
    let scores = (q * scale)?.matmul(&repeat(k)?.t()?)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m.reshape(((), 1, t, s))?)?,
        None => scores,
    };
    candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&repeat(v)?)
}

/// A causal mask over `t` queries after `len - t` earlier keys, with `pad[r]` left-padding
/// columns hidden from row `r` (as the LM's cache masks are).
fn mask(pad: &[usize], t: usize, len: usize) -> Result<Tensor> {
    let mut m = Vec::new();
    for &p in pad {
        for i in 0..t {
            let q = len - t + i;
            m.extend((0..len).map(|j| {
                if (j >= p && j <= q) || j == q {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    Tensor::from_vec(m, (pad.len(), 1, t, len), &candle_core::Device::Cpu)
}

/// Values and all three gradients against the composition: no mask, one causal mask for all
/// rows, per-row padding masks; one and several query blocks; plain and grouped-query heads.
#[test]
fn matches_the_composition_in_values_and_gradients() -> Result<()> {
    let dev = Device::Cpu;
    let cases: [(usize, usize, usize, usize, usize, &str); 5] = [
        (2, 4, 4, 9, 8, "none"),
        (2, 4, 2, 9, 8, "shared"),
        (3, 6, 2, 7, 16, "per-row"),
        (1, 2, 1, 70, 8, "shared"),
        (2, 2, 2, 70, 4, "none"),
    ];
    for (i, &(b, h, kv, t, hd, masking)) in cases.iter().enumerate() {
        let seed = 10 * i as u64;
        let q = Var::from_tensor(&seeded_randn((b, h, t, hd), 0.0, 1.0, seed, &dev)?)?;
        let k = Var::from_tensor(&seeded_randn((b, kv, t, hd), 0.0, 1.0, seed + 1, &dev)?)?;
        let v = Var::from_tensor(&seeded_randn((b, kv, t, hd), 0.0, 1.0, seed + 2, &dev)?)?;
        let probe = seeded_randn((b, h, t, hd), 0.0, 1.0, seed + 3, &dev)?;
        let m = match masking {
            "shared" => Some(mask(&[0], t, t)?),
            "per-row" => Some(mask(&(0..b).map(|r| 2 * r).collect::<Vec<_>>(), t, t)?),
            _ => None,
        };
        let scale = (hd as f64).powf(-0.5);
        let fused = attention(&q, &k, &v, m.as_ref(), scale as f32)?.expect("cpu f32");
        let reference = composed(&q, &k, &v, m.as_ref(), scale)?;
        let e = max_rel(&fused, &reference)?;
        assert!(e < 1e-6, "case {i}: values differ by {e:e}");
        let gf = (&fused * &probe)?.sum_all()?.backward()?;
        let gc = (&reference * &probe)?.sum_all()?.backward()?;
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let e = max_rel(gf.get(x).expect("grad"), gc.get(x).expect("grad"))?;
            assert!(e < 1e-5, "case {i}: d{name} differs by {e:e}");
        }
    }
    Ok(())
}

/// Queries over a longer cache (S > T), as in a prefill after cached tokens, forward only.
#[test]
fn queries_over_more_keys_than_queries() -> Result<()> {
    let dev = Device::Cpu;
    let (b, h, t, len, hd) = (2, 2, 3, 11, 8);
    let q = seeded_randn((b, h, t, hd), 0.0, 1.0, 60, &dev)?;
    let k = seeded_randn((b, h, len, hd), 0.0, 1.0, 61, &dev)?;
    let v = seeded_randn((b, h, len, hd), 0.0, 1.0, 62, &dev)?;
    let m = mask(&[0, 4], t, len)?;
    let fused = attention(&q, &k, &v, Some(&m), 0.3)?.expect("cpu f32");
    assert!(max_rel(&fused, &composed(&q, &k, &v, Some(&m), 0.3)?)? < 1e-6);
    Ok(())
}

/// Frozen keys and values (as under a frozen base) get no gradient; the query's is right.
#[test]
fn untracked_operands_get_no_gradient() -> Result<()> {
    let dev = Device::Cpu;
    let q = Var::from_tensor(&seeded_randn((1, 2, 5, 4), 0.0, 1.0, 70, &dev)?)?;
    let k = seeded_randn((1, 2, 5, 4), 0.0, 1.0, 71, &dev)?;
    let v = seeded_randn((1, 2, 5, 4), 0.0, 1.0, 72, &dev)?;
    let fused = attention(&q, &k, &v, None, 0.5)?.expect("cpu f32");
    let grads = fused.sum_all()?.backward()?;
    assert!(grads.get(&k).is_none() && grads.get(&v).is_none());
    let reference = composed(&q, &k, &v, None, 0.5)?.sum_all()?.backward()?;
    let e = max_rel(
        grads.get(&q).expect("grad"),
        reference.get(&q).expect("grad"),
    )?;
    assert!(e < 1e-5, "dq differs by {e:e}");
    Ok(())
}

#[test]
fn a_fully_masked_query_reads_zeros_and_bad_inputs_are_refused() -> Result<()> {
    let dev = Device::Cpu;
    let q = Var::from_tensor(&seeded_randn((1, 1, 2, 4), 0.0, 1.0, 80, &dev)?)?;
    let kv = seeded_randn((1, 1, 2, 4), 0.0, 1.0, 81, &dev)?;
    let inf = f32::NEG_INFINITY;
    let m = Tensor::new(&[[inf, inf], [0.0, inf]], &dev)?;
    let y = attention(&q, &kv, &kv, Some(&m), 1.0)?.expect("cpu f32");
    let rows = y.squeeze(0)?.squeeze(0)?.to_vec2::<f32>()?;
    assert!(rows[0].iter().all(|&x| x == 0.0));
    assert_eq!(
        rows[1],
        kv.squeeze(0)?.squeeze(0)?.get(0)?.to_vec1::<f32>()?
    );
    let g = y.sum_all()?.backward()?;
    assert!(g
        .get(&q)
        .expect("grad")
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|x| x.is_finite()));
    // a mask of the wrong size, keys of another head size, heads that do not group
    let wrong = Tensor::zeros((3, 2), DType::F32, &dev)?;
    assert!(attention(&q, &kv, &kv, Some(&wrong), 1.0).is_err());
    let k3 = seeded_randn((1, 1, 2, 3), 0.0, 1.0, 82, &dev)?;
    assert!(attention(&q, &k3, &k3, None, 1.0).is_err());
    let q3 = seeded_randn((1, 3, 2, 4), 0.0, 1.0, 83, &dev)?;
    let k2 = seeded_randn((1, 2, 2, 4), 0.0, 1.0, 84, &dev)?;
    assert!(attention(&q3, &k2, &k2, None, 1.0).is_err());
    // other dtypes are the caller's to compose
    let q64 = q.to_dtype(DType::F64)?;
    assert!(attention(&q64, &q64, &q64, None, 1.0)?.is_none());
    Ok(())
}
