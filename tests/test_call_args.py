"""inn_jax.models.call_args: every model's __call__ refuses a wrong tokens_BL or cache with the
argument's name, eagerly and while traced (jax.eval_shape traces as jit does), and the checks
add nothing to the traced computation."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from inn_jax.models import build_model, model_config
from tests.test_models import TINY

NAMES = {"inn": "INN", "mamba": "MambaStack", "lstm": "LSTM", "transformer": "Transformer"}


def _model(kind):
  """The model with abstract parameters (ShapeDtypeStructs): the checks read shapes only, and
  building and calling abstractly keeps these tests free of compiles."""
  model = nnx.eval_shape(lambda: build_model(model_config(kind, **TINY[kind]), 27, nnx.Rngs(0)))
  model.eval()
  return model


def _traced(model, fn, *args):
  """jax.eval_shape of fn(model, *args), the model's parameters traced as jit traces them."""
  graphdef, state = nnx.split(model)
  return jax.eval_shape(lambda s, *a: fn(nnx.merge(graphdef, s), *a), state, *args)


@pytest.fixture(scope="module", params=sorted(TINY))
def built(request):
  """(kind, model, the cache a call on batch 2 returns, as ShapeDtypeStructs)."""
  model = _model(request.param)
  cache = _traced(model, lambda m: m(jnp.zeros((2, 3), jnp.int32), return_cache=True))[1]
  return request.param, model, cache


BAD_TOKENS = [(jnp.zeros((2, 3, 4), jnp.int32), ValueError, r"tokens_BL must be 2-D"),
              (jnp.zeros((5,), jnp.int32), ValueError, r"tokens_BL must be 2-D .* tokens\[None\]"),
              (jnp.zeros((2, 0), jnp.int32), ValueError, r"tokens_BL must be 2-D .* both >= 1"),
              (jnp.zeros((2, 3)), TypeError, "tokens_BL must hold integer token ids"),
              ([[1, 2]], TypeError, "tokens_BL must be an integer array")]


@pytest.mark.parametrize("tokens,error,match", BAD_TOKENS)
def test_bad_tokens_name_the_argument(built, tokens, error, match):
  kind, model, _ = built
  with pytest.raises(error, match=f"^{NAMES[kind]}: {match}"):
    model(tokens)
  if isinstance(tokens, jax.Array):
    with pytest.raises(error, match=match):  # At trace time.
      _traced(model, lambda m, t: m(t), tokens)


def test_ids_outside_the_vocabulary_are_refused_eagerly(built):
  """1000 and -1 are no token of a 27-symbol vocabulary: an eager call says which and where,
  before any work (a gather would clamp them to id 26 and wrap -1)."""
  kind, model, _ = built
  for bad, where in ((1000, "[0, 1]"), (-1, "[1, 2]")):
    tokens = jnp.zeros((2, 3), jnp.int32).at[tuple(int(i) for i in where[1:-1].split(","))].set(
        bad)
    with pytest.raises(ValueError, match=rf"^{NAMES[kind]}: tokens_BL\{where[:-1]}\] = {bad} "
                                         r"is not a token id .*vocab_size=27"):
      model(tokens)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_under_jit_an_id_outside_the_vocabulary_gives_nan_not_a_real_token(kind):
  """Traced ids cannot be checked: the documented policy is NaN logits at the bad position (and
  after it; the Transformer's masked attention sums spread it over the row), so a loss over them
  is NaN, never a plausible number from a clamped id. The recurrent models keep the positions
  before it finite."""
  model = build_model(model_config(kind, **TINY[kind]), 27, nnx.Rngs(0))
  model.eval()
  graphdef, state = nnx.split(model)
  call = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
  for bad in (27, 1000, -1):
    logits = call(state, jnp.array([[3, bad, 4]], jnp.int32))
    assert bool(jnp.isnan(logits[0, 1:]).all()), bad
    assert kind == "transformer" or bool(jnp.isfinite(logits[0, 0]).all()), bad
  assert bool(jnp.isfinite(call(state, jnp.array([[3, 26, 0]], jnp.int32))).all())


@pytest.mark.parametrize("kind", sorted(TINY))
def test_bad_vocab_size_and_deterministic_are_refused(kind):
  for vocab_size in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match=rf"vocab_size={vocab_size!r} must be a positive int"):
      build_model(model_config(kind, **TINY[kind]), vocab_size, nnx.Rngs(0))
  model = _model(kind)
  with pytest.raises(TypeError, match=rf"^{NAMES[kind]}: deterministic must be None .* got 'yes'"):
    model(jnp.zeros((2, 3), jnp.int32), deterministic="yes")


def _drop_layer(cache):
  """The cache without its last layer."""
  if isinstance(cache, list):
    return cache[:-1]
  return cache._replace(k_BPHK=cache.k_BPHK[:-1], v_BPHK=cache.v_BPHK[:-1])


def _unnamed(cache):
  """The same arrays with the layers' named fields as plain tuples."""
  if isinstance(cache, list):
    return [tuple(c) for c in cache]
  return tuple(cache)


def test_cache_of_another_batch_names_the_leaf(built):
  kind, model, cache = built
  first = {"inn": r"cache\[0\]\.conv_window", "mamba": r"cache\[0\]\.conv_window",
           "lstm": r"cache\[0\]\.h_BU", "transformer": r"cache\.k_BPHK\[0\]"}[kind]
  with pytest.raises(ValueError, match=f"{first} must have shape .* batch 3"):
    model(jnp.zeros((3, 1), jnp.int32), cache=cache)
  with pytest.raises(ValueError, match=f"{first} must have shape"):  # At trace time.
    _traced(model, lambda m, t, c: m(t, cache=c), jnp.zeros((3, 1), jnp.int32), cache)


@pytest.mark.parametrize("corrupt", [_drop_layer, _unnamed])
def test_cache_of_another_structure_is_refused(built, corrupt):
  kind, model, cache = built
  with pytest.raises(ValueError, match=f"^{NAMES[kind]}: cache must be structured as "
                                       r"init_cache\(2\) returns, \d+ arrays"):
    model(jnp.zeros((2, 1), jnp.int32), cache=corrupt(cache))


def test_transformer_position_counter_must_be_integer():
  model = _model("transformer")
  cache = jax.eval_shape(lambda: model.init_cache(2))
  with pytest.raises(TypeError, match=r"cache\.pos must be integer"):
    model(jnp.zeros((2, 1), jnp.int32), cache=cache._replace(pos=jnp.float32(3)))
  # Any number of positions is a valid cache, as init_cache(batch, max_len) makes.
  short = jax.eval_shape(lambda: model.init_cache(2, max_len=5))
  out = _traced(model, lambda m, c: m(jnp.zeros((2, 1), jnp.int32), cache=c), short)
  assert out.shape == (2, 1, 27)


def test_the_cache_a_call_returned_passes(built):
  kind, model, cache = built
  out = _traced(model, lambda m, c: m(jnp.zeros((2, 2), jnp.int32), cache=c), cache)
  assert out.shape == (2, 2, 27)


@pytest.mark.parametrize("kind", ["inn", "transformer"])
def test_checks_add_nothing_to_the_traced_computation(kind, monkeypatch):
  """The checks read static shapes (and evaluate init_cache abstractly): the jaxpr of a jitted
  cached call is the same with them switched off."""
  model = _model(kind)
  graphdef, state = nnx.split(model)
  tokens, cache = jnp.zeros((2, 3), jnp.int32), jax.eval_shape(lambda: model.init_cache(2))

  def jaxpr():  # A new function each time: make_jaxpr caches traces by function.
    f = lambda s, t, c: nnx.merge(graphdef, s)(t, cache=c, return_cache=True)
    return str(jax.make_jaxpr(f)(state, tokens, cache))

  with_checks = jaxpr()
  monkeypatch.setattr("inn_jax.models.call_args.check_tokens", lambda *a: None)
  monkeypatch.setattr("inn_jax.models.call_args.check_cache", lambda *a: None)
  assert jaxpr() == with_checks
