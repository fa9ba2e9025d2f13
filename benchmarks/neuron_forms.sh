#!/usr/bin/env bash
# Which INN form should be the default: neuron_identity x neuron_params, each trained with
# train.py on the offline corpus (configs/quickstart.py: pydoc text in text8 form, 800 steps of
# 16 x 128 = 1.6M characters), 2 seeds, at equal parameter count (+-0.8%): "ssm" neurons are a
# little narrower (expand 113/64), "full" neurons a quarter as wide (expand 0.5: N=4 neurons
# each with its own memory hold as many parameters as one shared memory of expand 2).
#
#   PYTHON=.venv/bin/python bash benchmarks/neuron_forms.sh     # ~1.5 h on 2 CPU cores
#
# Each run's results.json and the neuron diversity of its trained model (python -m
# inn_jax.analyze) go to benchmarks/results/neuron_forms/; benchmarks/neuron_forms.py writes the
# table. A finished run is not trained again (train.py resumes, and a complete run only scores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-python}"
out=benchmarks/results/neuron_forms
mkdir -p "$out"
declare -A expand=([shared]=2.0 [ssm]=1.765625 [full]=0.5)
for seed in 0 1; do
  for params in shared ssm full; do
    for identity in embedding norm none; do
      name="$identity-$params-s$seed"
      work="workdirs/neuron_forms/$name"
      [[ -f "$out/$name.json" ]] && continue
      "$py" train.py --config configs/quickstart.py --config.workdir="$work" \
          --config.seed="$seed" --config.model.neuron_identity="$identity" \
          --config.model.neuron_params="$params" --config.model.expand="${expand[$params]}" \
          --config.log.progress=false
      "$py" -m inn_jax.analyze --workdir "$work" --split valid --out "$work/analysis" >/dev/null
      "$py" - "$work" "$out/$name.json" <<'PY'
import json, pathlib, sys
work, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
results = json.loads((work / "results.json").read_text())
report = json.loads((work / "analysis" / "report.json").read_text())
config = json.loads((work / "config.json").read_text())
results["model_config"] = config["model"]
results["diversity_layers"] = report["diversity"]["layers"]
dest.write_text(json.dumps(results, indent=1) + "\n")
PY
    done
  done
done
"$py" benchmarks/neuron_forms.py "$out"
