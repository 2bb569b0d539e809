"""What predict leaves for a person: per video a score curve (PNG), a highlight reel (MP4)
and the scores (JSON); per folder a static index.html that works from file://."""
from __future__ import annotations

import html
import json
import os
import urllib.parse

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from app import highlights  # pylint: disable=wrong-import-position
from dlvhd_jax import files  # pylint: disable=wrong-import-position

REEL_SUFFIX = '_highlights.mp4'


def plot_curve(pred: highlights.Prediction, path: str, thumbs: list) -> None:
  """Score over time with the highlight intervals shaded and the top segments' frames
  (`thumbs`: [(rank, time s, RGB image)]) above the curve, numbered on it."""
  n = len(thumbs)
  fig = plt.figure(figsize=(12, 5.2 if n else 3.4), dpi=100)
  grid = fig.add_gridspec(2 if n else 1, max(n, 1), height_ratios=[1.3, 2] if n else [1])
  ax = fig.add_subplot(grid[-1, :])
  mid = (pred.starts_s + pred.ends_s) / 2
  order = np.argsort(mid, kind='stable')
  rel = highlights.relative(pred.scores)
  for i, h in enumerate(pred.highlights):
    ax.axvspan(h['start_s'], h['end_s'], color='tab:orange', alpha=0.25, lw=0,
               label='highlights' if i == 0 else None)
  ax.plot(mid[order], rel[order], color='tab:blue', lw=1.5, marker='.', ms=4,
          label='score')
  for rank, t, _ in thumbs:
    y = float(np.interp(t, mid[order], rel[order]))
    ax.annotate(str(rank), (t, y), xytext=(0, 8), textcoords='offset points', ha='center',
                fontsize=9, fontweight='bold', color='tab:red')
    ax.plot([t], [y], 'o', color='tab:red', ms=5)
  ax.set_xlim(0, max(pred.duration_s, float(pred.ends_s.max(initial=0.0))))
  ax.set_xlabel('time (s)')
  ax.set_ylabel('relative score (1 = best segment)')
  ax.set_ylim(-0.05, 1.18)
  ax.grid(alpha=0.3)
  ax.legend(loc='upper right', fontsize=8)
  ax.set_title(f'{pred.video}: {len(pred.scores)} segments, {len(pred.highlights)} highlight '
               f"interval(s); {pred.model['method']} step {pred.model['step']}", fontsize=10)
  for i, (rank, t, img) in enumerate(thumbs):
    tax = fig.add_subplot(grid[0, i])
    tax.imshow(img)
    tax.set_axis_off()
    tax.set_title(f'#{rank}  {t:.1f} s', fontsize=9)
  fig.tight_layout()
  with files.writing(path):
    fig.savefig(path + '.tmp.png')
  plt.close(fig)
  os.replace(path + '.tmp.png', path)


def write_video_outputs(pred: highlights.Prediction, out_dir: str, video_path: str | None, *,
                        reel_seconds: float = 30.0, thumbnails: int = 4) -> dict:
  """<vid>.png, <vid>_highlights.mp4 (with a video) and <vid>.json, the JSON last."""
  from data_pipelines import reel  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  base = os.path.join(out_dir, pred.video)
  doc = pred.to_json()
  paths = {'json': base + '.json', 'png': base + '.png', 'reel': None}
  thumbs = []
  if video_path:
    plan = highlights.reel_plan(pred.highlights, reel_seconds)
    clips = reel.write_reel(video_path, plan, base + REEL_SUFFIX, max_seconds=reel_seconds)
    paths['reel'] = base + REEL_SUFFIX
    doc['reel'] = {'file': os.path.basename(paths['reel']),
                   'duration_s': round(sum(c.end_s - c.start_s for c in clips), 4),
                   'clips': [{'start_s': round(c.start_s, 4), 'end_s': round(c.end_s, 4),
                              'reel_start_s': round(c.reel_start_s, 4)} for c in clips]}
    rank = highlights.ranks(pred.scores)
    top = [i for i in np.argsort(rank)[:max(0, int(thumbnails))]]
    times = [float((pred.starts_s[i] + pred.ends_s[i]) / 2) for i in top]
    images = reel.frames_at(video_path, times)
    thumbs = [(int(rank[i]), t, img) for i, t, img in zip(top, times, images)]
  plot_curve(pred, paths['png'], thumbs)
  doc['files'] = {k: os.path.basename(v) for k, v in paths.items() if v}
  files.write_json(paths['json'], doc)
  return paths


def _url(name: str) -> str:
  return html.escape(urllib.parse.quote(name), quote=True)


def _classes(interval: dict, k: int = 2) -> str:
  """'surfing water 0.71, surfing crowd 0.12': an interval's most probable classes."""
  return html.escape(', '.join(f"{c['class']} {c['p']:.2f}" for c in interval.get('classes', [])[:k]))


def write_index(out_dir: str, failures: dict | None = None) -> str:
  """index.html listing every <vid>.json of `out_dir` (curve, reel, top intervals)."""
  docs = []
  for name in sorted(os.listdir(out_dir)):
    if name.endswith('.json') and not name.startswith('.'):
      try:
        with open(os.path.join(out_dir, name)) as f:
          doc = json.load(f)
      except (OSError, ValueError):
        continue
      if isinstance(doc, dict) and 'segments' in doc and 'highlights' in doc:
        docs.append(doc)
  parts = ['<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
           '<title>Highlights</title><style>',
           'body{font-family:sans-serif;margin:2em;max-width:1250px}'
           'section{border-top:1px solid #ccc;padding:1em 0}img{max-width:100%}'
           'video{max-width:640px;width:100%;background:#000}'
           'table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}'
           '.what{text-align:left}'
           '</style></head><body>',
           f'<h1>Highlights of {len(docs)} video(s)</h1>']
  if docs:
    m = docs[0]['model']
    parts.append(f"<p>Model: {html.escape(str(m.get('method')))} from "
                 f"{html.escape(str(m.get('workdir')))}, step {m.get('step')}, "
                 f"{m.get('num_seeds')} seed(s) averaged, features {html.escape(str(m.get('features')))}.</p>")
  for doc in docs:
    vid = html.escape(doc['video'])
    fl = doc.get('files', {})
    parts.append(f'<section id="{vid}"><h2>{vid}</h2><p>{doc["duration_s"]:.1f} s, '
                 f'{len(doc["segments"])} segments</p>')
    if fl.get('png'):
      parts.append(f'<img src="{_url(fl["png"])}" alt="score curve of {vid}">')
    if fl.get('reel'):
      parts.append(f'<h3>Highlight reel ({doc["reel"]["duration_s"]:.1f} s)</h3>'
                   f'<video controls preload="auto" src="{_url(fl["reel"])}"></video>')
    tagged = any('classes' in h for h in doc['highlights'])
    rows = ''.join(f'<tr><td>{i + 1}</td><td>{h["start_s"]:.2f}</td><td>{h["end_s"]:.2f}</td>'
                   f'<td>{h["score"]:.3f}</td>' + (f'<td class="what">{_classes(h)}</td>'
                                                  if tagged else '') + '</tr>'
                   for i, h in enumerate(sorted(doc['highlights'], key=lambda h: -h['score'])))
    parts.append('<h3>Top intervals</h3><table><tr><th>#</th><th>start (s)</th><th>end (s)</th>'
                 '<th>score</th>' + ('<th class="what">what happens (Kinetics-400)</th>'
                                     if tagged else '') + f'</tr>{rows}</table>')
    parts.append(f'<p><a href="{_url(doc["video"] + ".json")}">scores (JSON)</a></p></section>')
  if failures:
    parts.append('<section><h2>Failed</h2><ul>' + ''.join(
        f'<li>{html.escape(v)}: {html.escape(m)}</li>' for v, m in sorted(failures.items()))
                 + '</ul></section>')
  parts.append('</body></html>\n')
  path = os.path.join(out_dir, 'index.html')
  files.write_atomic(path, '\n'.join(parts))
  return path
