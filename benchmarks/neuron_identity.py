"""The neuron-identity experiment behind the INN's default (issue 2).

    python benchmarks/neuron_identity.py IDENTITY STEPS SEED PATH/TO/shakespeare.text8

A small INN (d_model 64, 2 layers, 8 neurons, d_state 8), AdamW + one-cycle (peak 3e-3), clip 1.0,
batches of 16 random windows of 128 characters; prints one JSON line: valid BPC on the first
102,400 validation characters (90/5/5 split) and the between-neuron share of the variance of the
first layer's neuron states (0 for copies).
"""
import sys, time, json, math
import numpy as np, jax, jax.numpy as jnp, optax
from flax import nnx
from inn_jax.models import INN
ident = sys.argv[1]; steps = int(sys.argv[2]); seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
txt = open(sys.argv[4]).read()
ids = np.frombuffer(txt.encode(), np.uint8).copy(); ids = np.where(ids == 32, 0, ids - 96).astype(np.int32)
n = len(ids); tr, va = ids[:int(.9*n)], ids[int(.9*n):int(.95*n)]
B, L = 16, 128
model = INN(27, d_model=64, n_layers=2, n_neurons=8, n_heads=4, d_state=8, neuron_identity=ident,
            rngs=nnx.Rngs(params=seed, dropout=seed+1))
sched = optax.cosine_onecycle_schedule(steps, 3e-3)
opt = nnx.Optimizer(model, optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01)), wrt=nnx.Param)
@nnx.jit
def step(model, opt, x, y):
  def lf(m): return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
  l, g = nnx.value_and_grad(lf)(model); opt.update(model, g); return l
@nnx.jit
def ev(model, x, y): return optax.softmax_cross_entropy_with_integer_labels(model(x), y).sum()
rng = np.random.default_rng(seed); t0 = time.time()
for s in range(steps):
  st = rng.integers(0, len(tr) - L - 1, B); x = np.stack([tr[i:i+L] for i in st]); y = np.stack([tr[i+1:i+L+1] for i in st])
  l = step(model, opt, x, y)
model.eval(); tot = 0.0; cnt = 0
W = 256; nv = (len(va) - 1) // W; nv = min(nv, 400)
xv = va[:nv*W].reshape(nv, W); yv = va[1:nv*W+1].reshape(nv, W)
for i in range(0, nv, 50): tot += float(ev(model, xv[i:i+50], yv[i:i+50])); cnt += xv[i:i+50].size
from inn_jax import activations
model.capture(); _, sown = nnx.capture(model, nnx.Intermediate)(xv[:8]); model.capture(False)
divs = [activations.diversity(*map(float, activations.diversity_sums(v.get_value()[0]))) for k, v in nnx.to_flat_state(sown) if k[-1] == 'neurons_BNLD']
print(json.dumps(dict(diversity=divs, identity=ident, steps=steps, seed=seed, train_loss=float(l), valid_bpc=tot/cnt/math.log(2), secs=time.time()-t0)))
