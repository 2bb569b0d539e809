"""--mode=benchmark prints one JSON line with the documented keys and consistent values."""
import json

import pytest


KEYS = ('step_time_s', 'sets_per_s', 'segments_per_s', 'train_tflop_per_step', 'achieved_tflops',
        'peak_tflops', 'mfu', 'compile_s', 'eval_windows_per_s', 'eval_mfu', 'devices', 'dtype',
        'global_batch', 'params', 'peak_memory_bytes')


# The DL-VHD step on 2 devices covers the most (three set kinds, two heads, a mesh); the
# single-device SL path is the same code with fewer of each.
@pytest.mark.parametrize('method,devices', [('dlvhd', 2)])
def test_benchmark_json(tmp_path, method, devices, monkeypatch, capsys):
  """In this process, on the first `devices` of its fake CPU devices."""
  import launch  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('DLVHD_NUM_DEVICES', str(devices))
  capsys.readouterr()
  code = launch.main(['launch.py', '--noprogress', '--config=configs/youtube_surfing.py', f'--workdir={tmp_path}', '--mode=benchmark',
                     f'--config.method={method}', '--config.model.width=64', '--config.model.depth=2',
                     '--config.model.num_heads=4', '--config.benchmark.feature_dim=48',
                     '--config.benchmark.batch_size=4', '--config.benchmark.num_steps=4',
                     '--config.train.steps_per_dispatch=2', '--config.benchmark.num_videos=6',
                     '--config.benchmark.segments_per_video=30', '--config.eval.batch_size=64',
                     '--config.benchmark.eval_windows=256', '--config.benchmark.matmul_size=256'])
  out = capsys.readouterr()
  assert code == 0, out.err[-3000:]
  lines = [l for l in out.out.splitlines() if l.startswith('{')]
  assert len(lines) == 1
  res = json.loads(lines[0])
  assert set(KEYS) <= set(res)
  assert json.loads((tmp_path / 'benchmark.json').read_text()) == res
  assert res['devices'] == (devices or 1) and res['global_batch'] == 4 and res['dtype'] == 'float32'
  assert res['step_time_s'] > 0 and res['compile_s'] > 0 and res['eval_windows_per_s'] > 0
  assert res['sets_per_s'] == pytest.approx(4 / res['step_time_s'])
  kinds = 3 if method == 'dlvhd' else 1
  assert res['segments_per_s'] == pytest.approx(kinds * 4 * 20 / res['step_time_s'])
  assert res['achieved_tflops'] == pytest.approx(res['train_tflop_per_step'] / res['step_time_s'])
  assert res['mfu'] == pytest.approx(res['achieved_tflops'] / res['peak_tflops'])
  assert 0 < res['mfu'] < 2 and 0 < res['eval_mfu'] < 2
  # No rated peak for a CPU: null, with the reason.
  assert res['mfu_rated'] is None and res['rated_peak_tflops'] is None
  assert 'CPU' in res['rated_peak_note']
  # Parameter count of the (published) model: projection + blocks (bias-free qkv) + heads
  # (W/4, W/16).
  w, d, m = 64, 48, 128
  block = 2 * 2 * w + 3 * w * w + (w * w + w) + (w * m + m) + (m * w + w)
  head = (w * 16 + 16) + (16 * 4 + 4) + (4 + 1)
  heads = 2 if method == 'dlvhd' else 1
  assert res['params'] == (d * w + w) + 2 * block + heads * head


def test_flop_count_of_the_paper_size_step():
  from dlvhd_jax.model import train_flops_per_set  # pylint: disable=g-import-not-at-top
  w, n = 4096, 20
  per_token_fwd = 5 * (8 * w * w + 4 * w * 2 * w + 4 * n * w) + 2 * (2 * (w * 1024 + 1024 * 256 + 256))
  assert train_flops_per_set(n, w, w, 5, 2 * w, (1024, 256), 2, True) == 3 * n * per_token_fwd


def test_rated_peaks_of_common_accelerators():
  from app.rated_peaks import rated_peak  # pylint: disable=g-import-not-at-top
  assert rated_peak('gpu', 'NVIDIA H200', 'bfloat16')[0] == pytest.approx(989.4e12)
  assert rated_peak('gpu', 'NVIDIA H100 PCIe', 'bfloat16')[0] == pytest.approx(756e12)
  assert rated_peak('gpu', 'NVIDIA H100 80GB HBM3', 'float32')[0] == pytest.approx(494.7e12)
  assert rated_peak('gpu', 'NVIDIA A100-SXM4-80GB', 'bfloat16')[0] == pytest.approx(312e12)
  assert rated_peak('gpu', 'NVIDIA L40S', 'bfloat16')[0] == pytest.approx(362e12)
  assert rated_peak('gpu', 'NVIDIA L4', 'bfloat16')[0] == pytest.approx(121e12)
  assert rated_peak('tpu', 'TPU v5 lite', 'bfloat16')[0] == pytest.approx(197e12)
  assert rated_peak('tpu', 'TPU v5', 'bfloat16')[0] == pytest.approx(459e12)
  assert rated_peak('tpu', 'TPU v6 lite', 'bfloat16')[0] == pytest.approx(918e12)
  peak, why = rated_peak('tpu', 'TPU v4', 'float32')
  assert peak is None and 'float32' in why
  peak, why = rated_peak('gpu', 'Some Future GPU', 'bfloat16')
  assert peak is None and 'unknown' in why


def test_eval_flops_match_what_xla_compiles_for_windowed_scoring():
  """model.eval_flops (the benchmark's eval_mfu numerator) against XLA's own count of the two
  compiled scoring programs: the bank projected once, the last block for the own segment only
  (were it run for every slot, XLA would count about a third more)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top
  from dlvhd_jax import evaluation, model as model_lib, parallel  # pylint: disable=g-import-not-at-top
  w, d, n, segments, windows = 256, 2048, 20, 100, 64
  cfg = base.get_base_config()
  cfg.model.width, cfg.model.depth, cfg.model.num_heads = w, 2, 4
  graphdef, params = nnx.split(model_lib.build_model(cfg, d, ('coarse', 'fine'), seed=0))
  fn = evaluation.make_logit_fn(graphdef, ('coarse', 'fine'), parallel.make_mesh())
  feats = jnp.zeros((segments, d))
  emb = fn.embed(params, feats)
  idx, mask, own = (jnp.asarray(a[:windows]) for a in evaluation.window_indices(segments, n))

  def counted(jitted, *args):
    cost = jitted.lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost).get('flops', 0.0)
  xla = counted(fn.embed, params, feats) + counted(fn.logits, params, emb, idx, mask, own)
  analytic = model_lib.eval_flops(windows, segments, n, d, w, 2, 2 * w,
                                  model_lib.resolved_head_dims(cfg, d), 2, True)
  # XLA also counts the elementwise work (layer norms, GELU, softmax): a few percent here.
  assert 1.0 <= xla / analytic < 1.06
