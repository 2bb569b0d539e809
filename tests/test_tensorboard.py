"""TensorBoard event files: the run's scalars read back from the files with a TFRecord
reader written here (length, CRCs, Event protos), not with the writer's own code."""
import glob
import json
import struct

import pytest

from conftest import tiny_overrides
from data_pipelines import synthetic


def read_scalars(folder: str) -> dict[str, dict[int, float]]:
  """Every scalar in the event files of `folder` -> {tag: {step: value}} (later files win)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  out = {}
  for path in sorted(glob.glob(f'{folder}/events.out.tfevents.*')):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4  # length, its CRC, the record, its CRC
      for v in event.summary.value:
        out.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
  return out


def test_training_and_evaluation_scalars_are_written_and_read_back(tmp_path, capfd):
  import launch  # pylint: disable=import-outside-toplevel
  root = synthetic.write_synthetic_dataset(str(tmp_path / 'd'), videos_per_category=10,
                                           min_len=8, max_len=16, dim=16)
  wd = tmp_path / 'run'
  code = launch.main(['launch.py', '--noprogress', '--config=configs/youtube_surfing.py',
                      f'--workdir={wd}', f'--config.data.root={root}',
                      '--config.data.source_category=diving',
                      '--config.data.target_category=climbing', '--config.num_seeds=2',
                      '--config.data.val_fraction=0.3', '--config.eval.every_steps=10',
                      *tiny_overrides()])
  assert code == 0, capfd.readouterr().err[-2000:]
  scalars = read_scalars(str(wd / 'tensorboard'))
  lines = [json.loads(l) for l in (wd / 'metrics.jsonl').read_text().splitlines()]
  logged = [l for l in lines if 'loss' in l]
  assert [l['step'] for l in logged] == [10, 20]
  for tag in ('loss', 'lr', 'grad_norm', 'skipped_updates', 'steps_per_s'):
    assert sorted(scalars[tag]) == [10, 20], tag
    for l in logged:  # float32 in the event file
      assert scalars[tag][l['step']] == pytest.approx(l[tag], rel=1e-6, abs=1e-12), tag
  val = [l for l in lines if 'source_val_map' in l]
  assert val and all(len(l['source_val_map_per_seed']) == 2 for l in val)
  for l in val:
    for i, v in enumerate(l['source_val_map_per_seed']):
      assert scalars[f'source_val_map_per_seed/seed_{i}'][l['step']] == pytest.approx(v, rel=1e-6)
  results = json.loads((wd / 'results.json').read_text())
  assert scalars['test_map'][20] == pytest.approx(results['map'], rel=1e-6)
  assert scalars['test_map_per_seed/seed_1'][20] == pytest.approx(results['per_seed'][1]['map'],
                                                                  rel=1e-6)


def test_scalars_are_written_without_importing_torch(tmp_path):
  """tensorboardX imports PyTorch where it is installed (4 s per process, every run); the
  writer keeps it out and still writes readable scalars. In a fresh interpreter: this one may
  hold torch from another test."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from conftest import REPO, subprocess_env  # pylint: disable=import-outside-toplevel
  code = ('import sys; from dlvhd_jax import metrics_log; '
          f'w = metrics_log.MetricsWriter({str(tmp_path)!r}); '
          "w.write({'step': 3, 'loss': 0.25}); w.close(); print('torch' in sys.modules)")
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == 'False'
  assert read_scalars(str(tmp_path / 'tensorboard')) == {'loss': {3: 0.25}}


def test_two_writers_in_one_second_keep_both_files(tmp_path):
  """A short run opens its training writer and, at the end, another for the test mAP, often in
  the same second: tensorboardX names files by the second, so the second writer must not
  truncate the first's file (it did: the training scalars vanished now and then)."""
  from dlvhd_jax import metrics_log  # pylint: disable=import-outside-toplevel
  a = metrics_log.MetricsWriter(str(tmp_path))
  a.write({'step': 1, 'loss': 0.5})
  a.close()
  b = metrics_log.MetricsWriter(str(tmp_path))
  b.scalars(1, {'test_map': 0.75})
  b.close()
  assert read_scalars(str(tmp_path / 'tensorboard')) == {'loss': {1: 0.5}, 'test_map': {1: 0.75}}
