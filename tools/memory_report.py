"""Peak bytes per device of the train state's init program and of the train step (issue 25).

Why a tool: the question "does num_seeds x the paper's width fit on one accelerator, and does
FSDP help where it is needed" has to be answered before an accelerator is lent, on a
machine that cannot hold 4 x 680 M parameters. XLA answers it without allocating anything:
the programs are lowered from abstract inputs (jax.ShapeDtypeStruct with shardings) on fake
CPU devices, compiled, and `compiled.memory_analysis()` gives the per-device sizes of the
SPMD-partitioned program. Nothing is executed at the configured width.

  python tools/memory_report.py --fsdp=1 --num_seeds=4            # paper width, 4 fake devices
  python tools/memory_report.py --fsdp=1,4 --num_seeds=4 --before_tree=/tmp/before_init
  python tools/memory_report.py --width=32 --depth=1 --heads=2 --feature_dim=32   # tiny, seconds

The paper's model is configs/table4.py's (no preset): width = the feature dimension (4096,
C3D), depth 5, 8 heads, MLP 2x, SGD with momentum, train.select = last; the global batch is
the paper's one set rounded up to the device count (4), the banks benchmark.num_videos x
benchmark.segments_per_video segments. About 1-2 minutes per paper-width program on 2 cores.

One JSON line per program:
- init, after: XLA's memory analysis of the one jitted program `train_step.init_state` runs
  (captured while init_state runs, lowered and compiled, never executed).
- step: XLA's memory analysis of `train_step.make_train_step`'s program on the abstract state
  (`init_state(..., abstract=True)`) and abstract feature banks.
- with --before_tree=DIR (a checkout of the eager init, e.g. `git worktree add DIR 11c7309^`):
  the same step analysis of that checkout's code, and its init as an accounting from shapes
  (the old init ran eagerly, op by op: there is no single program for XLA to analyse).
  Device 0 held every replica (a list), then their `jnp.stack` (a second copy) while the
  list was still referenced, then `device_put` laid the state out (a new buffer on device 0
  for every leaf that is split, probed below for replicated ones). Peak on device 0 =
  replicas + stacked + device 0's new buffers; each eager op's temporaries (at most about
  one leaf) are not counted.

peak_bytes_per_device = argument + output + temp - alias (XLA's sizes for one device; alias =
the donated arguments whose buffers the outputs reuse). No allocator peak is available on
CPU devices, so this is the figure; an accelerator's allocator adds fragmentation on top.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024 ** 3


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--devices', type=int, default=4, help='fake CPU devices')
  p.add_argument('--fsdp', default='1', help='config.mesh.fsdp; several: 1,4')
  p.add_argument('--num_seeds', type=int, default=4, help='config.num_seeds')
  p.add_argument('--config', default='configs/table4.py',
                 help='config file[:preset] of the checkout (default: the paper model of Table 4)')
  p.add_argument('--method', default='dlvhd')
  p.add_argument('--feature_dim', type=int, default=4096,
                 help="input feature dimension (4096: the paper's C3D features)")
  p.add_argument('--width', type=int, default=0, help='model.width (0 = the config)')
  p.add_argument('--depth', type=int, default=0, help='model.depth (0 = the config)')
  p.add_argument('--heads', type=int, default=0, help='model.num_heads (0 = the config)')
  p.add_argument('--select', default='', help="train.select ('' = the config)")
  p.add_argument('--batch', type=int, default=0,
                 help='global sets per step (0 = train.batch_size rounded up to the devices)')
  p.add_argument('--num_videos', type=int, default=0, help='videos per bank (0 = benchmark.*)')
  p.add_argument('--segments_per_video', type=int, default=0, help='(0 = benchmark.*)')
  p.add_argument('--programs', default='init,step', help='comma-separated: init, step')
  p.add_argument('--tree', default=REPO, help='the checkout whose code is measured')
  p.add_argument('--version', default='', help="label of --tree's lines ('' = after/before)")
  p.add_argument('--before_tree', default='',
                 help='also report the eager init of this checkout (e.g. 11c7309^)')
  args = p.parse_args(argv)
  try:
    args.fsdp = [int(k) for k in str(args.fsdp).split(',')]
  except ValueError:
    p.error(f'--fsdp={args.fsdp}: expected integers such as 1 or 1,4')
  if args.devices < 1 or any(k < 1 or args.devices % k for k in args.fsdp):
    p.error(f'--fsdp={",".join(map(str, args.fsdp))}: each must divide --devices={args.devices}')
  if args.num_seeds < 1:
    p.error(f'--num_seeds={args.num_seeds} must be at least 1')
  bad = set(args.programs.split(',')) - {'init', 'step'}
  if bad:
    p.error(f'--programs: unknown {sorted(bad)}; choose from init, step')
  return args


def _set_fake_devices(n: int) -> None:
  # Must happen before jax is imported: the CPU client reads it once.
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  os.environ['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={n}'])
  os.environ['JAX_PLATFORMS'] = 'cpu'  # fake devices exist on the CPU platform only


def _load_config(tree: str, spec: str):
  path, _, preset = spec.partition(':')
  path = path if os.path.isabs(path) else os.path.join(tree, path)
  if not os.path.isfile(path):
    raise SystemExit(f'error: --config={spec}: no file {path}')
  mod_spec = importlib.util.spec_from_file_location('_memory_report_config', path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(preset) if preset else mod.get_config()


def _commit(tree: str) -> str:
  try:
    return subprocess.run(['git', '-C', tree, 'describe', '--always', '--dirty'],
                          capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


def _analysis(compiled) -> dict:
  m = compiled.memory_analysis()
  sizes = {'argument_bytes': int(m.argument_size_in_bytes),
           'output_bytes': int(m.output_size_in_bytes),
           'temp_bytes': int(m.temp_size_in_bytes), 'alias_bytes': int(m.alias_size_in_bytes)}
  peak = (sizes['argument_bytes'] + sizes['output_bytes'] + sizes['temp_bytes']
          - sizes['alias_bytes'])
  return {'source': 'xla_memory_analysis', **sizes, 'peak_bytes_per_device': peak,
          'formula': 'argument + output + temp - alias'}


class _LowerOnlyJax:
  """Stands in for the `jax` module inside train_step while init_state runs: its `jit`
  lowers and compiles the program init_state would run and returns abstract outputs instead
  of running it, so the very program a run executes is measured without allocating it."""

  def __init__(self, jax_module):
    self._jax = jax_module
    self.compiled = []

  def __getattr__(self, name):
    return getattr(self._jax, name)

  def jit(self, fun, **kwargs):
    jitted = self._jax.jit(fun, **kwargs)

    def lower_only(*args):
      self.compiled.append(jitted.lower(*args).compile())
      return self._jax.eval_shape(jitted, *args)
    return lower_only


def main(argv=None) -> int:
  args = parse_args(argv)
  _set_fake_devices(args.devices)
  tree = os.path.abspath(args.tree)
  sys.path.insert(0, tree)

  import jax  # pylint: disable=g-import-not-at-top
  from dlvhd_jax import train_step  # pylint: disable=g-import-not-at-top

  if not os.path.samefile(os.path.dirname(train_step.__file__), os.path.join(tree, 'dlvhd_jax')):
    raise SystemExit(f'error: dlvhd_jax was imported from {train_step.__file__}, not --tree={tree}')
  if len(jax.devices()) != args.devices:
    raise SystemExit(f'error: {len(jax.devices())} devices instead of --devices={args.devices} '
                     '(jax was initialized before XLA_FLAGS was set)')
  commit = _commit(tree)
  # One process for every fsdp value: the imports and the config are shared.
  for fsdp in args.fsdp:
    for line in measure(args, tree, fsdp, commit):
      line['peak_gib_per_device'] = round(line['peak_bytes_per_device'] / GIB, 3)
      print(json.dumps(line), flush=True)

  if args.before_tree:
    # The other checkout in a fresh interpreter: its modules, its config files.
    before = os.path.abspath(args.before_tree)
    same = {k: v for k, v in vars(args).items() if k not in ('before_tree', 'tree', 'version')}
    same['fsdp'] = ','.join(map(str, args.fsdp))
    cmd = [sys.executable, os.path.abspath(__file__), *(f'--{k}={v}' for k, v in same.items()),
           f'--tree={before}', '--version=before']
    return subprocess.run(cmd, env={**os.environ, 'PYTHONPATH': before}).returncode
  return 0


def measure(args, tree: str, fsdp: int, commit: str) -> list[dict]:
  """The JSON lines of the requested programs of `tree`'s code at one mesh.fsdp."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from dlvhd_jax import methods, optimizer, parallel, sampling, train_step
  from dlvhd_jax import model as model_lib  # pylint: disable=g-import-not-at-top

  cfg = _load_config(tree, args.config)
  with cfg.unlocked():
    cfg.method = args.method
    cfg.num_seeds = args.num_seeds
    cfg.mesh.fsdp = fsdp
    if args.width:
      cfg.model.width = args.width
    if args.depth:
      cfg.model.depth = args.depth
    if args.heads:
      cfg.model.num_heads = args.heads
    if args.select:
      cfg.train.select = args.select
    devices = args.devices
    cfg.train.batch_size = args.batch or -(-int(cfg.train.batch_size) // devices) * devices
  batch = int(cfg.train.batch_size)
  dim = args.feature_dim
  num_videos = args.num_videos or int(cfg.benchmark.num_videos)
  seg = args.segments_per_video or int(cfg.benchmark.segments_per_video)
  programs = args.programs.split(',')

  objective = methods.get_objective(cfg.method)
  # Every fake device, explicitly: DLVHD_NUM_DEVICES (the test suite's) must not shrink it.
  mesh = parallel.make_mesh(jax.devices(), fsdp=fsdp)
  schedule = optimizer.make_schedule(cfg, num_videos * seg)
  tx, lr_fn = optimizer.make_optimizer(cfg, schedule)
  replicas = args.num_seeds > 1
  eager_init = 'abstract' not in inspect.signature(train_step.init_state).parameters
  version = args.version or ('before' if eager_init else 'after')

  if eager_init:
    # The eager init has no abstract mode: its state's shapes, traced, never allocated.
    graphdef = _nnx_graphdef(cfg, dim, objective, model_lib)
    shapes = jax.eval_shape(lambda: train_step.init_state(cfg, dim, objective, tx, mesh)[1])
    layout = parallel.state_sharding(mesh, shapes, replicas)
    state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                         shapes, layout)
  else:
    graphdef, state = train_step.init_state(cfg, dim, objective, tx, mesh, abstract=True)

  leaves = jax.tree.leaves(state)
  common = {'version': version, 'commit': commit, 'fsdp': fsdp, 'devices': args.devices,
            'num_seeds': args.num_seeds, 'method': cfg.method, 'feature_dim': dim,
            'width': model_lib.model_width(cfg, dim), 'depth': int(cfg.model.depth),
            'select': cfg.train.get('select', 'last'),
            'params_per_replica': int(sum(x.size for x in jax.tree.leaves(state.params)))
                                  // args.num_seeds,
            'state_bytes_all_replicas': int(sum(x.size * x.dtype.itemsize for x in leaves))}
  lines = []

  if 'init' in programs:
    if eager_init:
      lines.append({'program': 'init', **common, **_eager_init_accounting(
          jax, np, state, jax.devices()[0], replicas, args.num_seeds)})
    else:
      proxy = _LowerOnlyJax(jax)
      train_step.jax = proxy
      try:
        train_step.init_state(cfg, dim, objective, tx, mesh)
      finally:
        train_step.jax = jax
      if len(proxy.compiled) != 1:
        raise SystemExit(f'error: init_state ran {len(proxy.compiled)} jitted programs, '
                         'expected one: update tools/memory_report.py')
      lines.append({'program': 'init', **common, **_analysis(proxy.compiled[0])})

  if 'step' in programs:
    rep = parallel.replicated(mesh)
    bank_dtype = np.dtype(cfg.data.get('bank_dtype', 'float32'))
    sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=rep)

    def bank():
      s = num_videos * seg
      return sampling.SegmentBank(sds((s, dim), bank_dtype), sds((s,), np.float32),
                                  sds((s,), np.int32), sds((num_videos,), np.int32),
                                  sds((num_videos,), np.int32), seg)
    step = train_step.make_train_step(
        graphdef, tx, lr_fn, objective, cfg, mesh, batch,
        max(1, int(cfg.train.steps_per_dispatch)), schedule.total_steps,
        state_sharding=jax.tree.map(lambda x: x.sharding, state))
    compiled = step.lower(state, bank(), bank()).compile()
    lines.append({'program': 'step', **common, 'batch': batch, 'bank_segments': num_videos * seg,
                  **_analysis(compiled)})
  return lines


def _nnx_graphdef(cfg, dim, objective, model_lib):
  """The model's graphdef without building its parameters (the eager init returns one)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx.graphdef(nnx.eval_shape(lambda: model_lib.build_model(cfg, dim, objective.heads, 0)))


def _eager_init_accounting(jax, np, state, dev0, replicas: bool, num_seeds: int) -> dict:
  """Bytes the eager init held on device 0 at its peak, from the state's shapes and layout."""
  leaves = jax.tree.leaves(state)
  total = int(sum(x.size * x.dtype.itemsize for x in leaves))
  # Does device_put to a layout that keeps the whole leaf on device 0 reuse its buffer? Probed
  # on this JAX with a small array made as the old init made its leaves (an eager jnp.stack,
  # uncommitted on the default device) rather than assumed.
  probe = jax.numpy.stack([jax.numpy.ones((8, 8)), jax.numpy.zeros((8, 8))])
  moved = jax.device_put(probe, jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.array(jax.devices()), ('d',)), jax.sharding.PartitionSpec()))
  reused = any(s.device == dev0 and s.data.unsafe_buffer_pointer() == probe.unsafe_buffer_pointer()
               for s in moved.addressable_shards)
  new_on_dev0 = 0
  for x in leaves:
    shard = x.sharding.shard_shape(x.shape)
    whole = tuple(shard) == tuple(x.shape)
    if not (whole and reused):
      new_on_dev0 += int(np.prod(shard)) * x.dtype.itemsize
  replica_list = total
  stacked = total if replicas else 0  # one seed: no stack, the replica is the state
  # The largest leaf of one replica: about what one eager op's temporaries add on top.
  largest = max(x.size * x.dtype.itemsize for x in leaves) // (num_seeds if replicas else 1)
  return {'source': 'shape_accounting', 'replicas_bytes': replica_list, 'stacked_bytes': stacked,
          'device_put_new_bytes_device0': new_on_dev0,
          'device_put_reuses_replicated_buffer': bool(reused),
          'peak_bytes_per_device': replica_list + stacked + new_on_dev0,
          'largest_leaf_bytes': int(largest),
          'formula': ('device 0: every replica (list) + their jnp.stack + the new buffers of '
                      "device_put's layout on device 0; eager temporaries (about one leaf) "
                      'not counted')}


if __name__ == '__main__':
  sys.exit(main())
