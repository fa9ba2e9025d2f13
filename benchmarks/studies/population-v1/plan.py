"""The pre-registered plan of the study `population-v1`: what the population size N buys, at
about 100k parameters and equal tokens, for each way the neurons communicate (issue 23).

This file is data (Python literals only: benchmarks/study.py reads it with ast.literal_eval, it
runs nothing). It was committed before the study's first run; at that run the driver writes
registration.json beside it with the hash of this data and of the rules' code (RULES_CODE:
inn_jax/population_rules.py, inn_jax/claims.py and inn_jax/stats.py, whose helpers it uses).
The report prints verdicts only while both hashes match; a change to either is a new study.

The protocol is claims-v2's (configs/study.py): pydoc in text8 form, batch 16 x 128, AdamW with
OneCycleLR, clipping 1.0, weight decay 0.01, float32, dropout 0 and untied heads for every
model; every model its own sweep of peak rates (one more where the best is at an end),
chosen on valid (seed 0), reported on test; a second seed at the best rate (seed sets the
parameters and the data order); the Kneser-Ney n-gram rows on the same splits. Two departures,
both for budget and both the same for every model: 3 peak rates, 5e-3, 1e-2 and 2e-2 (claims-v2's
INN-family models at 100k parameters and 2M tokens all chose 5e-3 or 1e-2 there: sweep_2m), with
the one extension beyond an end as before; 4 periodic validations instead of 8.

The models: the INN with narrow neurons (neuron_width = d_neuron: each neuron its own
projection in from the embedding and out to the readout, its memory sized from d_neuron,
the LayerNorms' statistics over the whole population's features: inn_jax.nn.norm),
2 layers, d_state 8, one head (a neuron 1 wide admits one; the same for every N), 16 workspace
slots; N in {4, 16, 64, 256} x communication in {attention, workspace, none}. At each N the
width is the integer d_neuron whose parameter count is nearest 100k at d_model 64; at N = 256
the narrowest neuron (width 1) has 73k at d_model 64, so d_model is 112 there (every kind).
Parameters (counted by inn_jax.models.count_params, vocabulary 27): N=4 101,555 / 101,019 /
101,191; N=16 101,275 / 102,563 / 99,539; N=64 106,291 / 106,571 / 106,031; N=256 100,531 /
100,571 / 100,511 (attention / workspace / none): within 3% of the attention model's at
every N (claims-v2's rule for C3's ablations).

Budget: 12 models x (3 rates + at most 1 extension + 1 seed) = at most 60 runs of 1000 steps
(2,048,000 tokens). Timed before the first run (`python benchmarks/study.py --study
benchmarks/studies/population-v1 --measure --dry_run`, timing.json, on 2 cores shared with
another study): dense attention at N = 256 costs 5.0 s a step against 0.96 s for the workspace
and 0.44 s for none, about half of the whole study. So each model's sweep and second seed run
together (the stage's "order": "model"), smallest N first, attention-n256 last: the other 11
models' results land whole before it starts.
"""

NAME = "population-v1"
CONFIG = "configs/study.py"
RULES_CODE = ["population_rules", "claims", "stats"]  # inn_jax/<name>.py, hashed at registration.

COMMON = {
    "data.name": "pydoc", "data.normalize": "text8", "data.batch_size": 16,
    "data.seq_len": 128, "data.eval_batch_size": 64, "data.stream": "contiguous",
    "model.dtype": "float32", "optim.schedule": "one_cycle", "optim.weight_decay": 0.01,
    "optim.clip_norm": 1.0, "train.microbatches": 1, "train.eval_windows": 4,
    "model.n_layers": 2, "model.d_state": 8, "model.n_heads": 1, "model.attn_dropout": 0.0,
    "model.tie_embeddings": False, "model.workspace_slots": 16,
}
SEED_KEYS = ["seed", "data.seed"]

MODELS = {
    "attention-n4": {"variant": "inn", "set": {"model.communication": "attention",
                     "model.n_neurons": 4, "model.neuron_width": 33, "model.d_model": 64}},
    "workspace-n4": {"variant": "inn", "set": {"model.communication": "workspace",
                     "model.n_neurons": 4, "model.neuron_width": 32, "model.d_model": 64}},
    "none-n4": {"variant": "inn", "set": {"model.communication": "none",
                "model.n_neurons": 4, "model.neuron_width": 35, "model.d_model": 64}},
    "attention-n16": {"variant": "inn", "set": {"model.communication": "attention",
                      "model.n_neurons": 16, "model.neuron_width": 14, "model.d_model": 64}},
    "workspace-n16": {"variant": "inn", "set": {"model.communication": "workspace",
                      "model.n_neurons": 16, "model.neuron_width": 14, "model.d_model": 64}},
    "none-n16": {"variant": "inn", "set": {"model.communication": "none",
                 "model.n_neurons": 16, "model.neuron_width": 14, "model.d_model": 64}},
    "attention-n64": {"variant": "inn", "set": {"model.communication": "attention",
                      "model.n_neurons": 64, "model.neuron_width": 5, "model.d_model": 64}},
    "workspace-n64": {"variant": "inn", "set": {"model.communication": "workspace",
                      "model.n_neurons": 64, "model.neuron_width": 5, "model.d_model": 64}},
    "none-n64": {"variant": "inn", "set": {"model.communication": "none",
                 "model.n_neurons": 64, "model.neuron_width": 5, "model.d_model": 64}},
    "attention-n256": {"variant": "inn", "set": {"model.communication": "attention",
                       "model.n_neurons": 256, "model.neuron_width": 1, "model.d_model": 112}},
    "workspace-n256": {"variant": "inn", "set": {"model.communication": "workspace",
                       "model.n_neurons": 256, "model.neuron_width": 1, "model.d_model": 112}},
    "none-n256": {"variant": "inn", "set": {"model.communication": "none",
                  "model.n_neurons": 256, "model.neuron_width": 1, "model.d_model": 112}},
}

RATES = [5e-3, 1e-2, 2e-2]
EXTEND = {"below": 2e-3, "above": 5e-2}

STAGES = [
    {"name": "ngram", "kind": "ngram", "orders": [1, 2, 3, 4, 5, 6]},
    {"name": "population", "kind": "sweep",
     "models": ["attention-n4", "workspace-n4", "none-n4", "attention-n16", "workspace-n16",
                "none-n16", "attention-n64", "workspace-n64", "none-n64", "workspace-n256",
                "none-n256", "attention-n256"],
     "steps": 1000, "rates": RATES, "extend": EXTEND, "seeds_at_best": [1], "order": "model"},
]

CADENCE = {"evals": 4, "saves": 4}

# The rules (inn_jax/population_rules.py applies them with inn_jax/stats.py's statistics).
RULES = {
    "select": "valid_bpc", "measure": "test_bpc", "level": 0.95, "min_effect": 0.02,
    "ngram_reference": 5, "ngram_floor": 2, "overfit_rise": 0.01,
    "population": {
        "stage": "population", "ns": [4, 16, 64, 256],
        "kinds": ["attention", "workspace", "none"],
        # Q1, per kind: does N help? Paired test BPC of N=256 and of N=16 and 64 against N=4.
        # Q2, per N: workspace - attention. Q3, per N: attention - none and workspace - none.
        # A difference counts when its 95% t-interval excludes 0 and |mean| > min_effect; with
        # two seeds the interval has one degree of freedom, so only large, consistent
        # differences count: the rest are called ties.
    },
}
