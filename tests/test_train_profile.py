"""train.profile_steps: the value's checks, and a tiny run's trace of exactly those steps, in
which the named scopes of Algorithm 1 and the train step appear."""

import collections
import warnings

import pytest
from jax.profiler import ProfileData

import train
from inn_jax.train import profile, runner, workdir
from tests import train_cli


def test_parse_steps():
  assert profile.parse_steps("") is None
  assert profile.parse_steps("20:25") == range(20, 25)
  assert profile.parse_steps(" 7 ") == range(7, 8)
  assert profile.parse_steps("3:5", total_steps=4) == range(3, 5)  # Steps 3 and 4.
  for bad in ("5:2", "0:3", "a:b", "3:", "1:2:3", "-1"):
    with pytest.raises(ValueError, match=r"config\.train\.profile_steps: .*e\.g\. '20:25'"):
      profile.parse_steps(bad)
  with pytest.raises(ValueError, match=r"past the last step \(train\.steps=4\)"):
    profile.parse_steps("3:6", total_steps=4)


@pytest.mark.parametrize("value, fragment", [
    ("5:2", "'5:2' holds no step"), ("x", "'x' is not a step range"),
    ("3:9", "'3:9' goes past the last step (train.steps=4)")])
def test_bad_value_is_one_line_before_anything(tmp_path, capsys, value, fragment):
  path = train_cli.config_file(tmp_path, steps=4)
  err = train_cli.exits_with_one_line(
      train.main, train_cli.argv(path, train__profile_steps=value), capsys)
  assert err.startswith("error: config.train.profile_steps: ") and fragment in err, err
  assert not (tmp_path / "workdir").exists()  # Refused before anything was written.


def test_profile_steps_do_not_change_the_run():
  assert workdir.is_neutral("train.profile_steps")
  assert all(workdir.is_neutral(f"log.{k}") for k in ("wandb", "wandb_project",
                                                       "wandb_entity", "wandb_name"))


def _events(xplane):
  """(step numbers of the StepTraceAnnotations, {run_id: op events} of the train step)."""
  warnings.filterwarnings("ignore", "builtin type event_stats", DeprecationWarning)
  steps, runs = [], collections.Counter()
  for plane in ProfileData.from_file(str(xplane)).planes:
    for line in plane.lines:
      for e in line.events:
        stats = dict(e.stats)
        if e.name == "train" and "step_num" in stats:
          steps.append(int(stats["step_num"]))
        if stats.get("hlo_module") == "jit_step":
          runs[stats["run_id"]] += 1
  return sorted(steps), runs


def test_trace_holds_those_steps_and_the_named_scopes(tmp_path, capsys):
  path = train_cli.config_file(tmp_path, steps=4, mesh_data=1)
  config = train_cli.load(path, train__profile_steps="2:4")
  runner.train(config)
  assert "profiled steps 2-3 into" in capsys.readouterr().out
  files = profile.trace_files(config.workdir)
  assert len(files) == 1
  steps, runs = _events(files[0])
  # Steps 2 and 3, each whole: two executions of the step with the same number of ops.
  assert steps == [2, 3]
  assert len(runs) == 2 and len(set(runs.values())) == 1, runs
  # The compiled step's HLO is in the trace, with each op's scope path as its op_name.
  raw = files[0].read_bytes()
  for name in ("jit(step)/grads/jvp(embed)/", "/grads/jvp(layer_0)/memory/",
               "/grads/jvp(layer_1)/communication/", "/grads/jvp(head)/", "/grads/jvp(loss)/",
               "/grads/transpose(jvp(layer_0))/memory/",
               "/grads/transpose(jvp(layer_1))/communication/", "jit(step)/optimizer/",
               "jit(step)/finite_check/"):
    assert name.encode() in raw, name
