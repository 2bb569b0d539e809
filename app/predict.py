"""`--mode=predict`: a trained run (--workdir) applied to videos or feature files.

  python launch.py --mode=predict --workdir=runs/my_run --config=configs/<its config>.py \
      --config.predict.inputs=<video | folder | .npy> --config.predict.output_dir=out/

writes out/<vid>.json, <vid>.png, <vid>_highlights.mp4 and out/index.html (app/report.py).
A video is done when its JSON exists with this model's workdir and step, so a rerun skips
it; a video that fails is listed, skipped, and makes the exit code 1.
"""
from __future__ import annotations

import json
import os
import sys

from tqdm import tqdm

from app import detector, report
from data_pipelines import video
from dlvhd_jax.errors import UserInputError


def collect_inputs(inputs: str) -> tuple[list[str], list[str]]:
  """-> (video files, .npy files) named by `inputs`: a file or a folder (searched
  recursively), or a comma-separated list of them."""
  videos, npys = [], []
  for item in filter(None, (x.strip() for x in str(inputs).split(','))):
    if os.path.isdir(item):
      videos += sorted(video.find_videos(item).values())
      npys += sorted(os.path.join(d, f) for d, _, fs in os.walk(item) for f in fs
                     if f.endswith('.npy'))
    elif os.path.isfile(item):
      (npys if item.endswith('.npy') else videos).append(item)
    else:
      raise UserInputError(f'config.predict.inputs: {item} does not exist; pass a video, a '
                           'folder of videos or an .npy feature file')
  if not videos and not npys:
    raise UserInputError(f'config.predict.inputs={inputs!r}: no videos or .npy files found')
  return videos, npys


def _check_decoder(decoder: str) -> None:
  from data_pipelines import nvdec  # pylint: disable=g-import-not-at-top
  if decoder not in ('pyav', 'nvdec'):
    raise UserInputError(f"config.predict.decoder={decoder!r} must be 'pyav' or 'nvdec'")
  if decoder == 'nvdec':
    try:
      nvdec.check_available()
    except UserInputError as e:
      raise UserInputError(str(e).replace('--config.decoder=', '--config.predict.decoder=')) from None


def _done(out_dir: str, vid: str, det: detector.HighlightDetector) -> bool:
  path = os.path.join(out_dir, vid + '.json')
  try:
    with open(path) as f:
      m = json.load(f)['model']
  except (OSError, ValueError, KeyError, TypeError):
    return False
  return m.get('workdir') == det.model_info['workdir'] and m.get('step') == det.step


def run(cfg, workdir: str, progress: bool = True) -> int:
  p = cfg.get('predict')
  if p is None or not p.inputs:
    raise UserInputError('--mode=predict needs --config.predict.inputs=<video | folder | .npy>')
  videos, npys = collect_inputs(p.inputs)
  out_dir = p.output_dir or os.path.join(workdir, 'predictions')
  if p.video and len(npys) != 1:
    raise UserInputError('config.predict.video goes with exactly one .npy input')
  det = detector.HighlightDetector.from_workdir(workdir, weights=p.weights)
  if videos:  # what cannot featurize video says so before anything is written
    det.extraction()
    _check_decoder(p.decoder)
  os.makedirs(out_dir, exist_ok=True)
  opts = dict(top_fraction=float(p.top_fraction), top_k=int(p.top_k))
  render = dict(reel_seconds=float(p.reel_seconds), thumbnails=int(p.thumbnails))
  failures: dict[str, str] = {}
  done = 0

  def on_error(vid, message):
    failures[vid] = ' '.join(str(message).split())
    tqdm.write(f'failed: {failures[vid]}')

  def finish(pred, video_path=None):
    nonlocal done
    try:
      det.render(pred, out_dir, video_path=video_path, **render)
      done += 1
    except (OSError, UserInputError, video.VideoError) as e:
      on_error(pred.video, f'{pred.video}: {e}')

  skipped = 0
  for path in npys:
    try:
      vid, feats = det.load_npy(path)
      if _done(out_dir, vid, det):
        skipped += 1
        continue
      pred = det.score_video(path, video_path=p.video or None,
                             segment_seconds=float(p.segment_seconds), **opts)
      pred.video = vid
      finish(pred, p.video or None)
    except (UserInputError, video.VideoError) as e:
      if len(npys) + len(videos) == 1:
        raise
      on_error(os.path.basename(path), str(e))
  todo = [v for v in videos if not _done(out_dir, detector.video_id(v), det)]
  skipped += len(videos) - len(todo)
  if todo:
    print(f'{len(todo)} video(s) to score, {skipped} done before; model {det.cfg.method} '
          f'step {det.step} ({det.num_seeds} seed(s)) from {workdir}', file=sys.stderr)
    with tqdm(unit='clip', desc='predict', disable=not progress,
              bar_format='{desc}: {n_fmt} clips [{elapsed}, {rate_noinv_fmt}]') as bar:
      timing = det.score_videos(todo, finish, on_error, batch_size=int(p.batch_size),
                                decode_threads=int(p.decode_threads), decoder=p.decoder,
                                progress=bar, **opts)
    print(f"{timing['clips']} clips in {timing['wall_s']:.1f}s "
          f"({timing['clips'] / max(timing['wall_s'], 1e-9):.1f} clips/s)", file=sys.stderr)
  index = report.write_index(out_dir, failures)
  print(f'{done} scored, {skipped} done before, {len(failures)} failed: {index}', file=sys.stderr)
  if failures:
    print(f'{len(failures)} input(s) failed:\n' + '\n'.join(
        f'  {v}: {m}' for v, m in sorted(failures.items())), file=sys.stderr)
  return 1 if failures else 0
