"""The pre-registered plan of the study `claims-v2`: the paper's claims C1-C5 at about 100k
parameters on a 2-core CPU, every model tuned alike, against a Kneser-Ney n-gram.

This file is data (Python literals only: benchmarks/study.py reads it with ast.literal_eval, it
runs nothing). It was committed before the study's first run; at that run the driver wrote
registration.json beside it with the hash of this data and of the rules' code
(inn_jax/claims.py, inn_jax/stats.py). The report prints verdicts only while both hashes match;
a change to either is a new study (a new folder), never an edit of this one.

Why this study replaces `study` (issue 21): the earlier study changed C2's rule while it ran,
tuned only two models' rates, gave models different dropout and heads, ran too few tokens for
architectures to separate from an n-gram, and judged differences by a two-seed range.

Feasibility pilot, before this plan was written (not part of the study, its numbers not used):
single runs at peak rate 1e-2 for 3000 steps of 16 x 128 on pydoc gave test BPC LSTM 1.960
(98k parameters) and 1.862 (305k), Mamba stack 1.776, INN 1.860; the Kneser-Ney 5-gram scores
1.812 and the 6-gram 1.770. The same Mamba stack on the 4.4M-character Shakespeare text scored
2.059 against that text's 5-gram 2.057, so pydoc (built into CPython, reproducible anywhere)
was kept. The pilot chose only the corpus and the model sizes' range, not rates or rules.
"""

NAME = "claims-v2"
CONFIG = "configs/study.py"  # train.py's config; each run is <CONFIG>:<variant> + the keys below.

# Every run: the data, its batches and the protocol (keys of the train.py config).
COMMON = {
    "data.name": "pydoc", "data.normalize": "text8", "data.batch_size": 16,
    "data.seq_len": 128, "data.eval_batch_size": 64, "data.stream": "contiguous",
    "model.dtype": "float32", "optim.schedule": "one_cycle", "optim.weight_decay": 0.01,
    "optim.clip_norm": 1.0, "train.microbatches": 1, "train.eval_windows": 4,
}
SEED_KEYS = ["seed", "data.seed"]  # A run's seed sets its parameters and its data order.

# Models: the config variant and every size / form key the run sets. Dropout 0 for every model;
# untied heads and the scaled embedding for every model of our form (the `_paper` forms keep the
# paper code's tied N(0, 1) head, as C1 asks for them).
MODELS = {
    # About 100k parameters: the main comparison (C2), C3's learned row, the sizes' middle.
    "inn": {"variant": "inn", "set": {"model.d_model": 64, "model.n_layers": 2,
            "model.n_neurons": 4, "model.n_heads": 4, "model.d_state": 8,
            "model.attn_dropout": 0.0, "model.tie_embeddings": False}},
    "mamba": {"variant": "mamba", "set": {"model.d_model": 64, "model.n_layers": 3,
              "model.d_state": 8, "model.tie_embeddings": False}},
    "lstm": {"variant": "lstm", "set": {"model.hidden": 76, "model.n_layers": 2,
             "model.dropout": 0.0, "model.tie_embeddings": False}},
    "transformer": {"variant": "transformer", "set": {"model.d_model": 64, "model.n_layers": 2,
                    "model.n_heads": 4, "model.d_ff": 256, "model.dropout": 0.0,
                    "model.tie_embeddings": False}},
    # About 30k parameters.
    "inn-30k": {"variant": "inn", "set": {"model.d_model": 32, "model.n_layers": 2,
                "model.n_neurons": 4, "model.n_heads": 4, "model.d_state": 8,
                "model.attn_dropout": 0.0, "model.tie_embeddings": False}},
    "mamba-30k": {"variant": "mamba", "set": {"model.d_model": 32, "model.n_layers": 3,
                  "model.d_state": 8, "model.tie_embeddings": False}},
    "lstm-30k": {"variant": "lstm", "set": {"model.hidden": 40, "model.n_layers": 2,
                 "model.dropout": 0.0, "model.tie_embeddings": False}},
    "transformer-30k": {"variant": "transformer", "set": {"model.d_model": 32,
                        "model.n_layers": 2, "model.n_heads": 4, "model.d_ff": 128,
                        "model.dropout": 0.0, "model.tie_embeddings": False}},
    # About 300k parameters.
    "inn-300k": {"variant": "inn", "set": {"model.d_model": 112, "model.n_layers": 2,
                 "model.n_neurons": 4, "model.n_heads": 4, "model.d_state": 8,
                 "model.attn_dropout": 0.0, "model.tie_embeddings": False}},
    "mamba-300k": {"variant": "mamba", "set": {"model.d_model": 120, "model.n_layers": 3,
                   "model.d_state": 8, "model.tie_embeddings": False}},
    "lstm-300k": {"variant": "lstm", "set": {"model.hidden": 136, "model.n_layers": 2,
                  "model.dropout": 0.0, "model.tie_embeddings": False}},
    "transformer-300k": {"variant": "transformer", "set": {"model.d_model": 112,
                         "model.n_layers": 2, "model.n_heads": 4, "model.d_ff": 448,
                         "model.dropout": 0.0, "model.tie_embeddings": False}},
    # C3: the ablations, wider so that their parameters are within 3% of `inn`'s 96,539
    # (no_comm 94,747; static_comm 94,667: static routing has no heads, 2 divide the width).
    "no_comm": {"variant": "no_comm", "set": {"model.d_model": 80, "model.n_layers": 2,
                "model.n_neurons": 4, "model.n_heads": 4, "model.d_state": 8,
                "model.attn_dropout": 0.0, "model.tie_embeddings": False}},
    "static_comm": {"variant": "static_comm", "set": {"model.d_model": 70, "model.n_layers": 2,
                    "model.n_neurons": 4, "model.n_heads": 2, "model.d_state": 8,
                    "model.attn_dropout": 0.0, "model.tie_embeddings": False}},
    # C4: 16 neurons at `inn`'s parameters (each neuron's memory 8 wide).
    "inn-n16": {"variant": "inn", "set": {"model.d_model": 64, "model.n_layers": 2,
                "model.n_neurons": 16, "model.n_heads": 4, "model.d_state": 8,
                "model.attn_dropout": 0.0, "model.tie_embeddings": False}},
    # C1: the paper code's forms at its depth of 6 layers, width 40 (77,027 and 116,867).
    "mamba_paper-6l": {"variant": "mamba_paper", "set": {"model.d_model": 40,
                       "model.n_layers": 6, "model.d_state": 8}},
    "inn_paper-6l": {"variant": "inn_paper", "set": {"model.d_model": 40, "model.n_layers": 6,
                     "model.n_neurons": 4, "model.n_heads": 4, "model.d_state": 8,
                     "model.attn_dropout": 0.0}},
    # C5: the paper-code INN at 4 neurons and at 1, dropout off.
    "inn_paper": {"variant": "inn_paper", "set": {"model.d_model": 64, "model.n_layers": 2,
                  "model.n_neurons": 4, "model.n_heads": 4, "model.d_state": 8,
                  "model.attn_dropout": 0.0}},
    "inn_paper-n1": {"variant": "inn_paper", "set": {"model.d_model": 64, "model.n_layers": 2,
                     "model.n_neurons": 1, "model.n_heads": 4, "model.d_state": 8,
                     "model.attn_dropout": 0.0}},
}

# Rates of every sweep but C1's (1-2-5 steps). A sweep's best rate has the lowest valid BPC of
# its seed-0 runs (fresh state per window, the whole valid split, from the run's best
# checkpoint; a run stopped by a non-finite loss counts as +inf). Where that best is the lowest
# or the highest rate, the next rate beyond it (EXTEND) is run once, and the best is taken again;
# no further extension.
RATES = [2e-3, 5e-3, 1e-2, 2e-2]
EXTEND = {"below": 1e-3, "above": 5e-2}

# Stages, run in this order. Folder of a run: runs/<stage>/<model>-lr<rate>-s<seed>/.
STAGES = [
    # The trivial reference: Kneser-Ney orders 1-6 on the same splits and windows.
    {"name": "ngram", "kind": "ngram", "orders": [1, 2, 3, 4, 5, 6]},
    # C5: one run each, dropout off: the curves must agree (the construction says they are equal).
    {"name": "c5", "kind": "fixed", "models": ["inn_paper", "inn_paper-n1"], "steps": 500,
     "rate": 2e-3, "seeds": [0]},
    # The main comparison (C2, the headline): 3000 steps = 6,144,000 tokens, each model's own
    # sweep, then seeds 1 and 2 at its best rate.
    {"name": "main_6m", "kind": "sweep", "models": ["inn", "mamba", "lstm", "transformer"],
     "steps": 3000, "rates": RATES, "extend": EXTEND, "seeds_at_best": [1, 2]},
    # 1000 steps = 2,048,000 tokens: three sizes per architecture (the curves against FLOPs and
    # parameters) and C3's ablations, each its own sweep; seeds 1 and 2 at the best rate for the
    # 100k models (C3, and the middle of the curves).
    {"name": "sweep_2m", "kind": "sweep",
     "models": ["inn-30k", "mamba-30k", "lstm-30k", "transformer-30k", "inn", "mamba", "lstm",
                "transformer", "inn-300k", "mamba-300k", "lstm-300k", "transformer-300k",
                "no_comm", "static_comm"],
     "steps": 1000, "rates": RATES, "extend": EXTEND,
     "seeds_at_best": [1, 2],
     "seeds_at_best_models": ["inn", "mamba", "lstm", "transformer", "no_comm", "static_comm"]},
    # C4: 16 neurons, at the rate sweep_2m chose for `inn`, two seeds, then the analysis with
    # its nulls (inn_jax.analyze --null) on the valid split.
    {"name": "c4", "kind": "fixed", "models": ["inn-n16"], "steps": 1000,
     "rate_from": {"stage": "sweep_2m", "model": "inn"}, "seeds": [0, 1], "analyze": True},
    # C1: the paper code's forms at the rates, 1000 steps; a second seed at the top two.
    {"name": "c1", "kind": "grid", "models": ["mamba_paper-6l", "inn_paper-6l"], "steps": 1000,
     "rates": [4e-4, 2e-3, 1e-2, 3e-2], "seeds": [0],
     "extra_seeds": {"rates": [1e-2, 3e-2], "seeds": [1]}},
]

# Periodic validation 8 times a run, on the first eval_windows windows; checkpoints 4 times.
CADENCE = {"evals": 8, "saves": 4}

# The rules (inn_jax/claims.py applies them; inn_jax/stats.py computes the statistics).
RULES = {
    "select": "valid_bpc",   # A sweep's best rate: its seed-0 runs' valid BPC.
    "measure": "test_bpc",   # Every reported number: test BPC, fresh state per window.
    "level": 0.95,           # Two-sided t-intervals of paired per-seed differences.
    "min_effect": 0.02,      # A difference counts when its interval excludes 0 and |mean| > this.
    "ngram_reference": 5,    # Tables flag a row worse than the 5-gram...
    "ngram_floor": 2,        # ... and a neural row at its best rate must beat the bigram.
    "overfit_rise": 0.01,    # A best-rate run over-fits if its last periodic valid BPC exceeds
                             # its lowest by more than this; then C2 is provisional until a
                             # study with a second dropout value for every model.
    "c1": {"stage": "c1", "mamba": "mamba_paper-6l", "inn": "inn_paper-6l",
           "fail_above_order": 3},  # A run fails: a non-finite loss, or test BPC above the
                                    # trigram's. A model fails at a rate when every seed run
                                    # there fails, converges when none does. Holds: at some rate
                                    # the Mamba stack fails and the INN converges.
    "c2": {"stage": "main_6m", "inn": "inn", "lstm": "lstm", "transformer": "transformer",
           "mamba": "mamba",
           "lstm_margin": 0.03,          # Holds: upper end of INN - LSTM's interval <= 0.03
           "transformer_margin": 0.02},  # and lower end of Transformer - INN's > 0.02.
    "c3": {"stage": "sweep_2m", "inn": "inn", "none": "no_comm", "static": "static_comm",
           "param_match": 0.03},  # Holds: no_comm - inn and static_comm - no_comm both count > 0.
    "c4": {"stage": "c4", "inn": "inn-n16", "split": "valid", "max_tokens": 65536,
           "hub": 1.5, "specialist": 0.6, "quantile": 0.95, "level": 0.95,
           "bootstrap": 1000, "shuffles": 200},  # Holds: every analysed seed has a hub and a
                                                # specialist beyond both nulls in some layer.
    "c5": {"stage": "c5", "n": "inn_paper", "one": "inn_paper-n1", "equal_within": 0.01,
           "construction":  # The test that shows the N copies compute the one stream.
               "tests/test_inn.py::test_paper_faithful_population_equals_a_single_stream"},
}
