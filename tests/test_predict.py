"""--mode=predict and HighlightDetector: scores, curve, reel and index.html of new videos.

The real-video fixture is also the test that extracted I3D features train and evaluate
(data.features=rgb), and that predict tags each interval with the Kinetics classes of the same
forward pass."""
import json
import os
import shutil
import subprocess

import av
import numpy as np
import pytest

import launch
from app import detector, highlights
from conftest import SHARED_DATA, tiny_overrides
from data_pipelines import synthetic

VIDEOS = os.path.join(SHARED_DATA, 'videos')
needs_videos = pytest.mark.skipif(
    not os.path.isfile(os.path.join(VIDEOS, 'bikes.mp4')),
    reason='real test videos live in ../shared/data/videos (absent in this checkout)')


def _main(*args):
  return launch.main(['launch.py', '--noprogress', *args])


# ------------------------------------------------------------------ highlights (no model)

def test_ranks_merge_and_reel_plan():
  scores = np.array([0.1, 0.9, 0.8, -0.5, 0.9, 0.2])
  assert highlights.ranks(scores).tolist() == [5, 1, 3, 6, 2, 4]  # a tie goes to the earlier
  starts = np.arange(6) * 2.0
  hl = highlights.merge_top(starts, starts + 2.0, scores, 3)  # segments 1, 2 touch; 4 alone
  assert [(h['start_s'], h['end_s']) for h in hl] == [(2.0, 6.0), (8.0, 10.0)]
  assert hl[0]['score'] == pytest.approx(0.85)
  # Best first until the budget, the last one shortened, then played in time order.
  assert highlights.reel_plan(hl, 5.0) == [(2.0, 5.0), (8.0, 10.0)]
  assert highlights.num_top(10, 0.2, 0) == 2 and highlights.num_top(10, 0.2, 7) == 7
  assert highlights.relative(np.array([-0.9999, -0.9997, -0.9998])).tolist() == pytest.approx([0, 1, .5])


# ------------------------------------------------------------------ a run on synthetic features

@pytest.fixture(scope='module')
def synthetic_run(tmp_path_factory):
  work = str(tmp_path_factory.mktemp('predict_synth') / 'run')
  assert _main('--config=configs/demo.py', f'--workdir={work}', '--config.compare_methods=()',
               '--config.method=sl', *tiny_overrides()) == 0
  return work


def test_a_run_recorded_before_a_key_existed_reads_its_legacy_value(synthetic_run, tmp_path):
  """A config.json without loss.distill_to (runs before that key) ran the paper's 'both':
  its recorded config says so, so restoring it passes the checkpoint's run check."""
  old = str(tmp_path / 'old_run')
  shutil.copytree(synthetic_run, old)
  path = os.path.join(old, 'config.json')
  doc = json.load(open(path))
  for entry in doc['history']:
    entry['config']['loss'].pop('distill_to')
  json.dump(doc, open(path, 'w'))
  cfg = detector.recorded_config(old)
  assert cfg.loss.distill_to == 'both' and cfg.method == 'sl'
  from app import transfer  # pylint: disable=import-outside-toplevel
  assert transfer.restore(cfg, old).objective.name == 'sl'


def test_npy_input_streams_and_mismatch(synthetic_run, tmp_path, capsys):
  rng = np.random.RandomState(0)
  feats = rng.randn(30, 64).astype(np.float32)
  np.save(tmp_path / 'clip.npy', feats)
  out = tmp_path / 'out'
  args = ('--config=configs/demo.py', f'--workdir={synthetic_run}', '--mode=predict',
          f'--config.predict.output_dir={out}')
  assert _main(*args, f'--config.predict.inputs={tmp_path / "clip.npy"}',
               '--config.predict.segment_seconds=2') == 0
  doc = json.loads((out / 'clip.json').read_text())
  segs = doc['segments']
  assert len(segs) == 30 and segs[0]['start_s'] == 0 and segs[-1]['end_s'] == 60
  assert sorted(s['rank'] for s in segs) == list(range(1, 31))
  assert len(doc['highlights']) >= 1 and 'reel' not in doc
  assert (out / 'clip.png').is_file() and 'clip.png' in (out / 'index.html').read_text()
  # The scores are the model's windowed scores of exactly these features.
  det = detector.HighlightDetector.from_workdir(synthetic_run)
  np.testing.assert_allclose([s['score'] for s in segs], det.scores(feats), rtol=1e-6)
  # A two-stream run takes <vid>_rgb.npy and finds <vid>_opt.npy beside it.
  np.save(tmp_path / 'two_rgb.npy', feats[:, :32])
  np.save(tmp_path / 'two_opt.npy', feats[:, 32:])
  pred = det.score_video(str(tmp_path / 'two_rgb.npy'), segment_seconds=2.0)
  assert pred.video == 'two'
  np.testing.assert_allclose(pred.scores, det.scores(feats), rtol=1e-6)
  # Mismatches are one line naming both sides.
  np.save(tmp_path / 'narrow.npy', feats[:, :48])
  capsys.readouterr()
  assert _main(*args, f'--config.predict.inputs={tmp_path / "narrow.npy"}',
               '--config.predict.segment_seconds=2') == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and '48 features per segment' in err[0] and 'trained on 64' in err[0]
  np.save(tmp_path / 'clip_c3d.npy', feats)  # right size, wrong stream
  assert _main(*args, f'--config.predict.inputs={tmp_path / "clip_c3d.npy"}') == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "'c3d' features" in err[0] and "'rgb+opt'" in err[0]
  for bad, says in ((('--config.predict.inputs=',), 'needs --config.predict.inputs'),
                    ((f'--config.predict.inputs={tmp_path / "nope.mp4"}',), 'does not exist'),
                    ((f'--config.predict.inputs={tmp_path / "clip.npy"}', '--workdir=/nonexistent'),
                     'no readable run config')):
    assert _main(*args, *bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
  (tmp_path / 'movie.mp4').write_bytes(b'not a video')
  assert _main(*args, f'--config.predict.inputs={tmp_path / "movie.mp4"}') == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'did not make' in err[0] and '.npy' in err[0]


def test_class_tags_in_json_and_index(synthetic_run, tmp_path):
  """Kinetics logits given with the features tag each segment and each merged interval (the
  mean probabilities of its segments) in <vid>.json and index.html."""
  det = detector.HighlightDetector.from_workdir(synthetic_run)
  feats = np.random.RandomState(2).randn(6, 64).astype(np.float32)
  logits = np.zeros((6, 400))
  logits[:, 337] = 4.0  # surfing water everywhere, and crowds in the second half
  logits[3:, 336] = 4.5
  iv = np.stack([np.arange(6) * 2.0, np.arange(6) * 2.0 + 2], 1)
  pred = det.score_features(feats, vid='surf', intervals_s=iv, class_logits=logits, top_k=6)
  doc = pred.to_json()
  p_water = np.exp(4.0) / (np.exp(4.0) + 399)
  first = doc['segments'][0]['classes']
  assert first[0] == {'class': 'surfing water', 'p': pytest.approx(p_water, abs=1e-4)}
  assert doc['segments'][5]['classes'][0]['class'] == 'surfing crowd'
  (whole,) = doc['highlights']  # all six segments merged: their mean probabilities
  mean = logits.copy()
  mean = np.exp(mean - mean.max(1, keepdims=True))
  mean = (mean / mean.sum(1, keepdims=True)).mean(0)
  assert [c['class'] for c in whole['classes'][:2]] == ['surfing water', 'surfing crowd']
  assert whole['classes'][0]['p'] == pytest.approx(mean[337], abs=1e-4)
  det.render(pred, str(tmp_path), thumbnails=0)
  from app import report  # pylint: disable=import-outside-toplevel
  page = open(report.write_index(str(tmp_path))).read()
  assert 'what happens (Kinetics-400)' in page and f"surfing water {mean[337]:.2f}" in page


def test_features_of_another_extractor_are_refused(synthetic_run, tmp_path, capsys):
  """The run was trained on features no extraction record describes (a public release's
  kind); an .npy that --mode=extract wrote with I3D shares the shape, not the meaning."""
  folder = tmp_path / 'features' / 'video_features'
  folder.mkdir(parents=True)
  np.save(folder / 'v_rgb.npy', np.zeros((4, 32), np.float32))
  np.save(folder / 'v_opt.npy', np.zeros((4, 32), np.float32))
  (tmp_path / 'features' / 'rgb_extraction.json').write_text(json.dumps({'settings': {
      'extractor': 'i3d', 'random_weights': False, 'weights_sha256': 'af5c50f0df57' + '0' * 52}}))
  assert _main('--config=configs/demo.py', f'--workdir={synthetic_run}', '--mode=predict',
               f'--config.predict.inputs={folder / "v_rgb.npy"}',
               f'--config.predict.output_dir={tmp_path / "out"}',
               '--config.predict.segment_seconds=2') == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'I3D with weights sha256 af5c50f0df57' in err[0], err
  assert 'no extraction record' in err[0] and 'do not mix' in err[0]


def test_npy_index_renders_in_a_browser(synthetic_run, tmp_path):
  """index.html of a feature-file prediction (no ../shared needed, so CI's browser runs it):
  every image loads in headless Chromium."""
  np.save(tmp_path / 'clip.npy', np.random.RandomState(1).randn(12, 64).astype(np.float32))
  out = tmp_path / 'out'
  assert _main('--config=configs/demo.py', f'--workdir={synthetic_run}', '--mode=predict',
               f'--config.predict.output_dir={out}', f'--config.predict.inputs={tmp_path / "clip.npy"}',
               '--config.predict.segment_seconds=2') == 0
  seen = _probe_page(str(out / 'index.html'))
  assert seen['imgs'] >= 1 and seen['ok_imgs'] == seen['imgs'] and seen['vids'] == 0, seen


# ------------------------------------------------------------------ real videos, end to end

def _probe_page(index_html: str) -> dict:
  """Loads index.html in headless Chromium; -> how many images / videos loaded."""
  browser = shutil.which('chromium') or shutil.which('chromium-browser')
  if browser is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
  probe = index_html.replace('.html', '.probe.html')
  script = (
      "<script>function probe(){const im=[...document.images],"
      "vs=[...document.querySelectorAll('video')];document.body.setAttribute('data-probe',"
      "JSON.stringify({imgs:im.length,ok_imgs:im.filter(i=>i.complete&&i.naturalWidth>0).length,"
      "vids:vs.length,ok_vids:vs.filter(v=>v.readyState>=1&&v.duration>0).length}));}"
      "window.addEventListener('load',()=>{document.querySelectorAll('video').forEach(v=>{"
      "v.addEventListener('loadedmetadata',probe);v.addEventListener('error',probe);});probe();});"
      "</script>")
  with open(index_html) as f:
    page = f.read()
  with open(probe, 'w') as f:
    f.write(page.replace('</body>', script + '</body>'))
  dom = subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu',
                        '--allow-file-access-from-files', '--virtual-time-budget=5000',
                        '--dump-dom', 'file://' + probe], capture_output=True, text=True,
                       timeout=120).stdout
  os.remove(probe)
  marker = 'data-probe="'
  assert marker in dom, dom[-500:]
  raw = dom.split(marker, 1)[1].split('"', 1)[0]
  return json.loads(raw.replace('&quot;', '"'))


@pytest.fixture(scope='module')
def video_run(tmp_path_factory):
  """Real mp4s -> I3D features (the package's Kinetics-400 weights) -> synthetic labels -> a
  2-seed run -> predict. Every 4th frame of each 2-second segment (max_segment_frames=16, which
  predict takes from the extraction record): I3D on a CPU is most of this file's time, and the
  frames' timing is tested with the reel, the network itself in test_i3d.py."""
  if not os.path.isfile(os.path.join(VIDEOS, 'bikes.mp4')):
    pytest.skip('real test videos live in ../shared/data/videos (absent in this checkout)')
  base = tmp_path_factory.mktemp('predict_videos')
  feats, run, out, inputs = (str(base / n) for n in ('features', 'run', 'out', 'inputs'))
  assert _main('--mode=extract', '--config=configs/extract_i3d.py', f'--workdir={feats}',
               f'--config.video_dir={VIDEOS}', '--config.segmenter=segment_seconds',
               '--config.segment_seconds=2.0', '--config.max_segment_frames=16') == 0
  anno = json.load(open(os.path.join(feats, 'youtube_anno.json')))
  assert set(anno) == {'bikes', 'bigbuckbunny'}
  for vid, entry in anno.items():
    x = np.load(os.path.join(feats, 'video_features', f'{vid}_rgb.npy'))
    assert x.shape == (len(entry['clip']), 1024) and np.isfinite(x).all()
  synthetic.label_extracted(feats, copies=3)
  # Training reads the extracted features (data.features=rgb) and evaluates on them.
  assert _main('--config=configs/own_videos.py', f'--workdir={run}', f'--config.data.root={feats}',
               '--config.num_seeds=2', '--config.train.num_steps=20',
               '--config.train.checkpoint_every_steps=20') == 0
  res = json.load(open(os.path.join(run, 'results.json')))
  assert res['features'] == 'rgb' and res['num_test_videos'] == 2 and 0 < res['map'] <= 1
  os.makedirs(inputs)
  for name in ('bikes.mp4', 'bigbuckbunny.mp4'):
    shutil.copy(os.path.join(VIDEOS, name), inputs)
  with open(os.path.join(inputs, 'broken.mp4'), 'wb') as f:
    f.write(b'\x00\x00\x00\x18ftypmp42' + b'\x00' * 64)
  args = ('--mode=predict', '--config=configs/own_videos.py', f'--workdir={run}',
          f'--config.predict.inputs={inputs}', f'--config.predict.output_dir={out}',
          '--config.predict.batch_size=4', '--config.predict.reel_seconds=2.5')
  code = _main(*args)
  return {'out': out, 'run': run, 'args': args, 'code': code, 'features': feats}


def _decode(path, width=None, height=None):
  """-> (times [F], RGB frames [F, H, W, 3]) of a video's first video stream."""
  with av.open(path) as c:
    s = c.streams.video[0]
    pairs = [(float(f.pts * s.time_base), f.to_ndarray(width=width, height=height, format='rgb24'))
             for f in c.decode(s)]
  return np.array([t for t, _ in pairs]), np.stack([x for _, x in pairs])


@pytest.mark.slow
@needs_videos
def test_predict_real_videos(video_run, capsys):
  out = video_run['out']
  assert video_run['code'] == 1  # broken.mp4 failed; the others were scored
  for vid in ('bikes', 'bigbuckbunny'):
    doc = json.load(open(os.path.join(out, vid + '.json')))
    segs = doc['segments']
    # Segments tile the whole video.
    assert segs[0]['start_s'] == 0
    assert all(a['end_s'] == pytest.approx(b['start_s']) for a, b in zip(segs, segs[1:]))
    assert segs[-1]['end_s'] == pytest.approx(doc['duration_s'], abs=1e-3)
    with av.open(os.path.join(VIDEOS, vid + '.mp4')) as c:
      s = c.streams.video[0]
      assert doc['duration_s'] == pytest.approx(s.frames / float(s.average_rate), abs=1e-3)
    assert doc['model']['num_seeds'] == 2 and doc['model']['step'] == 20
    assert sorted(x['rank'] for x in segs) == list(range(1, len(segs) + 1))
    import matplotlib.image  # pylint: disable=g-import-not-at-top
    assert matplotlib.image.imread(os.path.join(out, vid + '.png')).shape[0] > 200
    # The reel: at most reel_seconds, and every frame is the source frame at the time the
    # reel's clip table says, inside a highlight interval.
    reel = os.path.join(out, doc['reel']['file'])
    times, frames = _decode(reel)
    h, w = frames.shape[1:3]
    with av.open(reel) as c:
      fps = float(c.streams.video[0].average_rate)
      audio = [float(a.duration * a.time_base) for a in c.streams.audio]
    assert len(frames) / fps <= 2.5 + 1e-6 and len(frames) >= 1
    src_t, src = _decode(os.path.join(VIDEOS, vid + '.mp4'), w, h)
    src_t -= src_t[0]
    clips = doc['reel']['clips']
    for t, frame in zip(times, frames):
      clip = [c for c in clips if c['reel_start_s'] - 1e-3 <= t < c['reel_start_s'] +
              c['end_s'] - c['start_s'] - 1e-3][0]
      source_time = clip['start_s'] + t - clip['reel_start_s']
      assert any(hl['start_s'] - 0.05 <= source_time < hl['end_s'] + 1e-3
                 for hl in doc['highlights'])
      i = int(np.argmin(np.abs(src_t - source_time)))
      assert abs(src_t[i] - source_time) < 0.5 / fps
      assert np.abs(frame.astype(float) - src[i]).mean() < 8  # H.264 re-encoding noise only
    if vid == 'bigbuckbunny':  # its audio track is kept, cut to the same length
      assert len(audio) == 1 and audio[0] == pytest.approx(len(frames) / fps, abs=0.1)
    # Kinetics classes of every segment and interval, from the extraction's forward pass
    for part in segs + doc['highlights']:
      probs = [c['p'] for c in part['classes']]
      assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
  # The opening of bigbuckbunny is a bird on a branch (I3D on it: tests/test_i3d.py).
  bunny = json.load(open(os.path.join(out, 'bigbuckbunny.json')))
  assert bunny['segments'][0]['classes'][0]['class'] == 'feeding birds'
  index = open(os.path.join(out, 'index.html')).read()
  assert 'bikes_highlights.mp4' in index and 'broken' in index  # the failure is listed
  assert 'what happens (Kinetics-400)' in index and 'feeding birds 0.' in index
  # A rerun skips what is done and still reports the failure.
  capsys.readouterr()
  mtime = os.path.getmtime(os.path.join(out, 'bikes.json'))
  assert _main(*video_run['args']) == 1
  assert '0 scored, 2 done before, 1 failed' in capsys.readouterr().err
  assert os.path.getmtime(os.path.join(out, 'bikes.json')) == mtime


@pytest.mark.slow
@needs_videos
def test_index_renders_in_a_browser(video_run):
  seen = _probe_page(os.path.join(video_run['out'], 'index.html'))
  assert seen == {'imgs': 2, 'ok_imgs': 2, 'vids': 2, 'ok_vids': 2}


@pytest.mark.slow
@needs_videos
def test_detector_api_matches_the_command(video_run, tmp_path):
  det = detector.HighlightDetector.from_workdir(video_run['run'])
  pred = det.score_video(os.path.join(VIDEOS, 'bigbuckbunny.mp4'), top_fraction=0.3,
                         batch_size=4)
  doc = json.load(open(os.path.join(video_run['out'], 'bigbuckbunny.json')))
  np.testing.assert_allclose(pred.scores, [s['score'] for s in doc['segments']], rtol=1e-5)
  paths = det.render(pred, str(tmp_path), reel_seconds=1.0, thumbnails=2)
  assert os.path.isfile(paths['png']) and os.path.isfile(paths['reel'])
  assert json.load(open(paths['json']))['reel']['duration_s'] <= 1.0
