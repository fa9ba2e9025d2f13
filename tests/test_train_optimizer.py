"""inn_jax.train.optimizer: OneCycleLR equality with PyTorch, AdamW by hand, the decay mask."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.models import build_model
from inn_jax.train import optimizer
from tests import tiny as testing
from inn_jax.train.config import base_config, paper_model

# torch 2.13.0: OneCycleLR(AdamW(lr=4e-4), max_lr=4e-4, total_steps=T), defaults otherwise;
# (lr, betas[0]) read before the optimizer.step() of each step s (computed once, outside tests).
TORCH_ONE_CYCLE = {
    100: {0: (1.600000000000001e-05, 0.95), 1: (1.7125512226362992e-05, 0.9497068978577179),
          10: (0.00011806557938564031, 0.9234204220349895),
          28: (0.00039887448777363704, 0.850293102142282), 29: (0.0004, 0.85),
          30: (0.0003997986141138097, 0.8500503466729342),
          50: (0.00031755738023029283, 0.8706107373853763),
          98: (2.0298588619031517e-07, 0.9499496533270657), 99: (1.5999999999999999e-09, 0.95)},
    7: {0: (1.600000000000001e-05, 0.95), 1: (0.0003922226509339835, 0.8520253513192751),
        2: (0.00036761775050788423, 0.858095594755408),
        3: (0.00026907353459221803, 0.8827317472789346), 6: (1.5999999999999999e-09, 0.95)},
}


def optim_cfg(**overrides):
  cfg = base_config("t", paper_model("inn", False), "text8").optim
  cfg.update(overrides)
  return cfg


@pytest.mark.parametrize("total", sorted(TORCH_ONE_CYCLE))
def test_one_cycle_equals_pytorch(total):
  lr, b1 = optimizer.schedules(optim_cfg(lr=4e-4), total)
  for step, (want_lr, want_b1) in TORCH_ONE_CYCLE[total].items():
    np.testing.assert_allclose(float(lr(step)), want_lr, rtol=2e-6, err_msg=f"lr at {step}")
    np.testing.assert_allclose(float(b1(step)), want_b1, rtol=2e-6, err_msg=f"b1 at {step}")


def test_constant_schedule_and_no_cycling():
  lr, b1 = optimizer.schedules(optim_cfg(schedule="constant", lr=1e-3, b1=0.8), 10)
  assert (lr, b1) == (1e-3, 0.8)
  _, b1 = optimizer.schedules(optim_cfg(cycle_momentum=False, b1=0.7), 10)
  assert b1 == 0.7


def test_adamw_first_step_by_hand():
  """clip -> Adam (beta1 = 0.95 at step 0) -> decoupled decay on the kernel only -> lr/25."""
  params = {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.3, -0.1])}
  grads = {"kernel": jnp.array([[3.0, 0.0], [-4.0, 1.0]]), "bias": jnp.array([2.0, -2.0])}
  cfg = optim_cfg(lr=1e-2, weight_decay=0.1, clip_norm=1.0, eps=1e-8)
  tx = optimizer.make_optimizer(cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
  lr0 = 1e-2 / 25
  want = {}
  for key, decay in (("kernel", True), ("bias", False)):
    g = np.asarray(grads[key]) / max(norm, 1.0)
    m_hat = (1 - 0.95) * g / (1 - 0.95)
    v_hat = (1 - 0.999) * g ** 2 / (1 - 0.999)
    want[key] = -lr0 * (m_hat / (np.sqrt(v_hat) + 1e-8) + (0.1 * np.asarray(params[key])
                                                             if decay else 0.0))
  # optax computes in float32, the reference in float64: 1e-5 relative is ~100 ulps; atol 1e-9
  # is negligible next to every update (>= 8e-5 here), so in effect the test is relative.
  chex.assert_trees_all_close(updates, want, rtol=1e-5, atol=1e-9)


def test_decay_mask_excludes_norms_biases_embeddings():
  cfg = testing.tiny_model(paper_model("inn", False, neuron_identity="embedding"))
  model = build_model(cfg, 9, nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  flat = {jax.tree_util.keystr(p): bool(m) for p, m in
          jax.tree_util.tree_leaves_with_path(optimizer.decay_mask(params))}
  decayed = {k for k, v in flat.items() if v}
  assert any("in_proj']['kernel" in k for k in decayed)
  assert any("conv_WE" in k for k in decayed)
  for word in ("norm", "table_VD", "neuron_embed", "bias", "A_log", "D_E"):
    hits = [k for k in flat if word in k]
    assert hits and not any(flat[k] for k in hits), word
  assert all(jax.tree.leaves(optimizer.decay_mask(params, "all")))
  with pytest.raises(ValueError, match="decay_mask"):
    optimizer.decay_mask(params, "some")


def test_clipping_off_keeps_gradient_scale():
  params = {"w": jnp.ones((2, 2))}
  grads = {"w": jnp.full((2, 2), 100.0)}
  cfg = optim_cfg(clip_norm=0.0, schedule="constant", lr=1.0, cycle_momentum=False,
                  weight_decay=0.0)
  tx = optimizer.make_optimizer(cfg, 10)
  _, state = tx.update(grads, tx.init(params), params)
  mu = state[1].inner_state[0].mu["w"]  # Adam's first moment sees the unclipped gradient.
  np.testing.assert_allclose(mu, 0.1 * 100.0, rtol=1e-6)


def test_decay_mask_counts_a_per_neuron_parameter_by_its_slice():
  """neuron_params="ssm": a neuron's D (E,) and dt bias are not matrices, its A_log is exempt;
  a per-neuron kernel ("full") is a matrix per neuron and decays."""
  for mode, decayed_part in (("ssm", None), ("full", "memory']['in_proj']['kernel")):
    cfg = testing.tiny_model(paper_model("inn", False, neuron_params=mode))
    params = nnx.state(build_model(cfg, 9, nnx.Rngs(0)), nnx.Param)
    flat = {jax.tree_util.keystr(p): bool(m) for p, m in
            jax.tree_util.tree_leaves_with_path(optimizer.decay_mask(params))}
    for word in ("D_E", "dt_bias", "A_log"):
      hits = [k for k in flat if word in k]
      assert hits and not any(flat[k] for k in hits), (mode, word)
    if decayed_part:
      hits = [k for k in flat if decayed_part in k]
      assert hits and all(flat[k] for k in hits), mode
