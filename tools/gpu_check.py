"""One prepared GPU check (issue 25): every figure the project wants from an accelerator, in
one command that fits in 8 minutes of a lent GPU, one JSON line per measurement.

Why prepared: a GPU is lent to some sessions only, with 15 minutes of device time in all
(start-up included), so the check has to be ready, and known to run, before one is lent.
`--tiny` swaps in tiny widths, batches and steps so that the same script runs on a CPU in
seconds (tests/test_gpu_check.py runs it), and it cannot rot.

  bash tools/gpu_check.sh            # on the GPU machine: at most 8 minutes (--budget_s)
  bash tools/gpu_check.sh --tiny     # anywhere (or GPU_CHECK_TINY=1): tiny sizes

Every measurement is `python launch.py --mode=benchmark ...` in a fresh process (so compile
times are a launch's), and prints one line with "check":
  paper_step   the paper-width (4096) bf16 DL-VHD step at global batch 256: the benchmark's
               JSON (step_time_s, sets_per_s, mfu against the measured peak, mfu_rated against
               the rated one, compile_s, peak memory, ...), first launch, empty compile cache.
  compile      the same launch again on the now warm cache: compile_s cold and warm.
  seeds        the cpu-preset model (configs/youtube_surfing.py:cpu) with num_seeds 1 and 8:
               both step times and their ratio (8 would be 8x on a busy device).
  extract_c3d  the C3D extraction benchmark, one line per decoder (pyav, nvdec): compute,
               decode and pipeline clips/s; nvdec is skipped with the reason where it cannot
               run (no PyNvVideoCodec, no GPU).
  extract_i3d  the I3D extraction benchmark (Kinetics-400 weights), one line per decoder as
               extract_c3d: 2 s segments of the sample mp4s at their own rate, bf16.
  summary      wall time, budget, platform, which checks failed.
A check that fails or runs out of time prints {"check": ..., "error": ...}; the others still run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEO_DIRS = (os.path.join(REPO, '..', 'shared', 'data', 'videos'),
              os.path.join(REPO, 'shared', 'data', 'videos'))

# Config overrides keyed by `tiny`: False = what issue 25 asks for on one GPU; True = the same
# code paths at sizes a 2-core CPU runs in seconds.
PAPER = {
    False: {'model.width': 4096, 'benchmark.feature_dim': 4096, 'benchmark.batch_size': 256,
            'benchmark.dtype': 'bfloat16', 'benchmark.num_steps': 10,
            'benchmark.warmup_steps': 2},
    True: {'model.width': 32, 'benchmark.feature_dim': 32, 'model.depth': 1,
           'model.num_heads': 2, 'benchmark.batch_size': 8, 'benchmark.dtype': 'bfloat16',
           'benchmark.num_steps': 2, 'benchmark.warmup_steps': 1, 'benchmark.num_videos': 8,
           'benchmark.segments_per_video': 16, 'benchmark.eval_windows': 64,
           'benchmark.matmul_size': 256, 'eval.batch_size': 64},
}
SEEDS = {
    # The cpu preset dispatches 10 steps per call: 50 steps = 5 timed calls.
    False: {'benchmark.num_steps': 50, 'benchmark.warmup_steps': 10},
    True: {'model.width': 32, 'benchmark.feature_dim': 32, 'model.depth': 1,
           'model.num_heads': 2, 'benchmark.batch_size': 8, 'train.steps_per_dispatch': 1,
           'benchmark.num_steps': 2, 'benchmark.warmup_steps': 1, 'benchmark.num_videos': 8,
           'benchmark.segments_per_video': 16, 'benchmark.eval_windows': 64,
           'benchmark.matmul_size': 256, 'eval.batch_size': 64},
}
# Tiny: 2 seeds, not 8; the vectorized axis is what is exercised, and 8 tiny replicas
# cost the CPU seconds of tracing for nothing.
SEED_COUNTS = {False: (1, 8), True: (1, 2)}
EXTRACT = {
    # As docs/predict.md's NVDEC measurement: the two sample mp4s cut into 0.5 s segments and
    # repeated to 512 clips, bf16, batch 64, 4 decode threads.
    False: {'segmenter': 'segment_seconds', 'segment_seconds': 0.5, 'benchmark.num_clips': 512,
            'dtype': 'bfloat16', 'batch_size': 64, 'decode_threads': 4},
    # C3D has one size (16 x 112 x 112 clips): tiny means one clip, one thread, a 256^2 peak.
    True: {'segmenter': 'segment_seconds', 'segment_seconds': 5.0, 'benchmark.num_clips': 1,
           'dtype': 'float32', 'batch_size': 1, 'decode_threads': 1, 'queue_size': 1,
           'benchmark.matmul_size': 256},
}
EXTRACT_I3D = {
    # 2 s segments (50 frames at 25 fps, padded to 65) repeated to 64 clips; compute alone on
    # 64-frame clips.
    False: {'segmenter': 'segment_seconds', 'segment_seconds': 2.0, 'benchmark.num_clips': 64,
            'benchmark.clip_frames': 64, 'dtype': 'bfloat16', 'batch_size': 16,
            'decode_threads': 4},
    True: {'segmenter': 'segment_seconds', 'segment_seconds': 0.4, 'benchmark.num_clips': 1,
           'benchmark.clip_frames': 9, 'dtype': 'float32', 'batch_size': 1, 'decode_threads': 1,
           'queue_size': 1, 'benchmark.matmul_size': 256},
}
TINY_XLA_FLAGS = ('--xla_backend_optimization_level=0', '--xla_llvm_disable_expensive_passes=true',
                  '--xla_cpu_use_fusion_emitters=false')
# Seconds each check may take at most (full mode); the whole run also stops at --budget_s.
CAPS = {'paper_step': 210, 'compile': 90, 'seeds_1': 45, 'seeds_8': 60, 'extract_pyav': 50,
        'extract_nvdec': 50, 'extract_i3d_pyav': 60, 'extract_i3d_nvdec': 60}

def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--tiny', action='store_true', default=os.environ.get('GPU_CHECK_TINY') == '1',
                 help='tiny sizes (CPU, seconds); also GPU_CHECK_TINY=1')
  p.add_argument('--budget_s', type=float, default=float(os.environ.get('GPU_CHECK_BUDGET_S', 480)),
                 help='stop starting checks after this many seconds (default 480 = 8 minutes)')
  p.add_argument('--out', default='', help='folder for workdirs and logs (default: a new temp dir)')
  p.add_argument('--videos', default=os.environ.get('GPU_CHECK_VIDEOS', ''),
                 help='folder of videos for the extraction check (default ../shared/data/videos)')
  p.add_argument('--allow_cpu', action='store_true',
                 help='run the full sizes even without an accelerator (hours on a CPU)')
  return p.parse_args(argv)


def _overrides(d: dict) -> list[str]:
  return [f'--config.{k}={v}' for k, v in d.items()]


class Checker:
  """Runs launch.py benchmarks within the time budget and prints the JSON lines."""

  def __init__(self, args):
    self.args, self.t0, self.failed, self.walls = args, time.monotonic(), [], {}
    self.out = os.path.abspath(args.out or tempfile.mkdtemp(prefix='gpu_check_'))
    os.makedirs(self.out, exist_ok=True)
    self.env = {**os.environ, 'PYTHONPATH': REPO + (os.pathsep + os.environ['PYTHONPATH']
                                                    if os.environ.get('PYTHONPATH') else '')}
    if args.tiny:
      # Tiny figures mean nothing, so LLVM need not optimize the CPU code: it halves compile
      # time (XLA's buffer sizes, and so what the lines report besides speed, are unchanged).
      self.env['XLA_FLAGS'] = ' '.join([self.env.get('XLA_FLAGS', ''), *TINY_XLA_FLAGS]).strip()

  def left(self) -> float:
    return self.args.budget_s - (time.monotonic() - self.t0)

  def emit(self, line: dict) -> None:
    if 'error' in line:
      self.failed.append(line['check'] + (f':{line["decoder"]}' if 'decoder' in line else ''))
    print(json.dumps(line), flush=True)

  def launch(self, name: str, args: list[str]) -> tuple[dict | None, str, float]:
    """-> (the launch's last JSON line or None, error or '', wall seconds)."""
    cap = 600.0 if self.args.tiny else CAPS[name]
    timeout = min(cap, self.left())
    if timeout < 10:
      return None, f'not run: the {self.args.budget_s:.0f} s budget is spent', 0.0
    cmd = [sys.executable, os.path.join(REPO, 'launch.py'), '--noprogress', '--mode=benchmark', f'--workdir={os.path.join(self.out, name)}', *args]
    log = os.path.join(self.out, f'{name}.log')
    t = time.monotonic()
    try:
      with open(log, 'w') as f:
        proc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=f,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
      self.walls[name] = round(time.monotonic() - t, 1)
      return None, f'timed out after {timeout:.0f} s (log: {log})', time.monotonic() - t
    wall = time.monotonic() - t
    self.walls[name] = round(wall, 1)
    for line in reversed(proc.stdout.splitlines()):
      if line.startswith('{'):
        if proc.returncode == 0:
          return json.loads(line), '', wall
        break
    with open(log) as f:
      tail = [l.strip() for l in f if l.strip()]
    return None, f'exit {proc.returncode}: {tail[-1] if tail else "no output"} (log: {log})', wall

  def run(self) -> int:
    tiny = self.args.tiny
    if not tiny and not self.args.allow_cpu:
      backend = subprocess.run([sys.executable, '-c', 'import jax; print(jax.default_backend())'],
                               env=self.env, capture_output=True, text=True).stdout.strip()
      if backend not in ('gpu', 'cuda', 'rocm', 'tpu'):
        print(f'error: no accelerator (jax backend {backend or "unavailable"}): run with --tiny, '
              'or --allow_cpu for the full sizes', file=sys.stderr)
        return 2
    self.paper_and_compile(tiny)
    self.seeds(tiny)
    self.extraction(tiny, 'c3d', EXTRACT[tiny])
    self.extraction(tiny, 'i3d', EXTRACT_I3D[tiny])
    self.emit({'check': 'summary', 'tiny': tiny, 'wall_s': round(time.monotonic() - self.t0, 1),
               'budget_s': self.args.budget_s, 'launch_wall_s': self.walls, 'failed': self.failed,
               'out': self.out})
    return 1 if self.failed else 0

  def paper_and_compile(self, tiny: bool) -> None:
    # A fresh cache folder: the first launch compiles everything, the second loads it.
    cache = tempfile.mkdtemp(prefix='compile_cache_', dir=self.out)
    args = ['--config=configs/youtube_surfing.py', *_overrides(PAPER[tiny]),
            f'--config.compile_cache_dir={cache}']
    cold, err, cold_wall = self.launch('paper_step', args)
    if cold is None:
      self.emit({'check': 'paper_step', 'error': err, 'wall_s': round(cold_wall, 1)})
      self.emit({'check': 'compile', 'error': 'no cold launch to compare with'})
      return
    self.emit({'check': 'paper_step', **cold, 'wall_s': round(cold_wall, 1)})
    warm, err, warm_wall = self.launch('compile', args)
    if warm is None:
      self.emit({'check': 'compile', 'error': err, 'wall_s': round(warm_wall, 1)})
      return
    entries = [os.path.join(cache, f) for f in os.listdir(cache)]
    self.emit({'check': 'compile', 'program': 'paper_step benchmark launch', 'cache_dir': cache,
               'cold_compile_s': cold['compile_s'], 'warm_compile_s': warm['compile_s'],
               'warm_over_cold': warm['compile_s'] / cold['compile_s'],
               'cold_wall_s': round(cold_wall, 1), 'warm_wall_s': round(warm_wall, 1),
               'cache_entries': len(entries),
               'cache_bytes': sum(os.path.getsize(f) for f in entries if os.path.isfile(f)),
               'warm_step_time_s': warm['step_time_s'], 'platform': warm['platform'],
               'device_kind': warm['device_kind']})

  def seeds(self, tiny: bool) -> None:
    results = {}
    for r in SEED_COUNTS[tiny]:
      # The default compile cache, as any launch: this check times steps, not compiles.
      res, err, wall = self.launch(f'seeds_{r}', [
          '--config=configs/youtube_surfing.py:cpu', *_overrides(SEEDS[tiny]),
          f'--config.num_seeds={r}'])
      if res is None:
        self.emit({'check': 'seeds', 'error': f'num_seeds={r}: {err}', 'wall_s': round(wall, 1)})
        return
      results[r] = res
    lo, hi = SEED_COUNTS[tiny]
    a, b = results[lo], results[hi]
    self.emit({'check': 'seeds', 'config': 'configs/youtube_surfing.py:cpu', 'num_seeds': [lo, hi],
               f'step_time_s_{lo}': a['step_time_s'], f'step_time_s_{hi}': b['step_time_s'],
               f'ratio_{hi}_over_{lo}': b['step_time_s'] / a['step_time_s'],
               f'sets_per_s_{lo}': a['sets_per_s'], f'sets_per_s_{hi}': b['sets_per_s'],
               f'mfu_{lo}': a['mfu'], f'mfu_{hi}': b['mfu'], f'mfu_rated_{lo}': a['mfu_rated'],
               f'mfu_rated_{hi}': b['mfu_rated'], 'global_batch': a['global_batch'],
               'width': a['width'], 'platform': a['platform'], 'device_kind': a['device_kind']})

  def extraction(self, tiny: bool, extractor: str, overrides: dict) -> None:
    check = f'extract_{extractor}'
    videos = self.args.videos or next((d for d in VIDEO_DIRS if os.path.isdir(d)), '')
    if videos and not os.path.isdir(videos):
      self.emit({'check': check, 'decoder': 'pyav',
                 'error': f'--videos={videos} is not a folder'})
      return
    for decoder in ('pyav', 'nvdec'):
      if decoder == 'nvdec':
        why = self.nvdec_unavailable() if videos else 'no videos to decode'
        if why:
          self.emit({'check': check, 'decoder': 'nvdec', 'skipped': why})
          continue
      args = [f'--config=configs/extract_{extractor}.py', *_overrides(overrides),
              f'--config.decoder={decoder}']
      if videos:
        args.append(f'--config.video_dir={os.path.abspath(videos)}')
      name = f'extract_{decoder}' if extractor == 'c3d' else f'extract_{extractor}_{decoder}'
      res, err, wall = self.launch(name, args)
      if res is None:
        self.emit({'check': check, 'decoder': decoder, 'error': err, 'wall_s': round(wall, 1)})
        continue
      # Without videos the benchmark measures compute only; the line says so.
      self.emit({'check': check, 'decoder': decoder, 'video_dir': videos or None,
                 **res, 'wall_s': round(wall, 1)})

  def nvdec_unavailable(self) -> str:
    """'' where NVDEC can decode here, else the one-line reason."""
    if importlib.util.find_spec('PyNvVideoCodec') is None:  # the usual case, without a process
      return 'PyNvVideoCodec is not installed (pip install PyNvVideoCodec; see docs/predict.md)'
    proc = subprocess.run(
        [sys.executable, '-c', 'from data_pipelines import nvdec; print(nvdec.check_available())'],
        cwd=REPO, env=self.env, capture_output=True, text=True)
    if proc.returncode == 0:
      return ''
    lines = [l.strip() for l in proc.stderr.splitlines() if l.strip()]
    if not lines:
      return f'nvdec check exited {proc.returncode}'
    # The exception's message, without its module-qualified class name.
    head, sep, message = lines[-1].partition(': ')
    return message if sep and head.split('.')[-1].endswith('Error') else lines[-1]


def main(argv=None) -> int:
  return Checker(parse_args(argv)).run()


if __name__ == '__main__':
  sys.exit(main())
