"""ActivityNet v1.3 in the official layout (a small synthetic file): categories from the
taxonomy tree, multi-category videos, coverage labels (SPEC and the published rule), a run."""
import json
import os

import ml_collections
import numpy as np
import pytest

from conftest import tiny_overrides
from data_pipelines import activitynet, datasets
from dlvhd_jax.errors import UserInputError

TOP = ('Eating and drinking Activities', 'Personal Care', 'Household Activities',
       'Sports, Exercise, and Recreation', 'Socializing, Relaxing, and Leisure')
# label -> (its parent, a first-level category); the tree has a middle level.
LEAVES = {'Drinking coffee': 'Eating and drinking Activities',
          'Shaving': 'Personal Care', 'Mopping floor': 'Household Activities',
          'Long jump': 'Sports, Exercise, and Recreation', 'Surfing': 'Sports, Exercise, and Recreation',
          'Playing guitarra': 'Socializing, Relaxing, and Leisure'}


def taxonomy():
  nodes = [{'nodeId': 0, 'nodeName': 'Root', 'parentId': None, 'parentName': None}]
  for i, name in enumerate(TOP, 1):
    nodes.append({'nodeId': i, 'nodeName': name, 'parentId': 0, 'parentName': 'Root'})
  for j, (leaf, top) in enumerate(LEAVES.items()):
    mid = 100 + j
    top_id = TOP.index(top) + 1
    nodes.append({'nodeId': mid, 'nodeName': f'{leaf} group', 'parentId': top_id, 'parentName': top})
    nodes.append({'nodeId': 200 + j, 'nodeName': leaf, 'parentId': mid,
                  'parentName': f'{leaf} group'})
  return nodes


def write_activitynet(root, dim=8, seed=0):
  rng = np.random.RandomState(seed)
  os.makedirs(os.path.join(root, 'video_features'), exist_ok=True)
  db = {}
  labels = list(LEAVES)
  for i in range(36):
    duration = float(rng.randint(40, 80))
    events = []
    for leaf in rng.choice(labels, size=rng.randint(1, 3), replace=False):
      s = float(rng.uniform(0, duration - 10))
      events.append({'segment': [s, s + float(rng.uniform(4, 15))], 'label': str(leaf)})
    vid = f'vid{i:03d}'
    db[vid] = {'duration': duration, 'subset': 'training' if i % 3 else 'validation',
               'resolution': '640x360', 'url': '', 'annotations': events}
    rows = int(duration // 3.2)
    feats = rng.randn(rows, dim).astype(np.float32)
    for name in ('rgb', 'opt'):
      prefix = 'v_' if i % 2 else ''  # both file namings occur in the wild
      np.save(os.path.join(root, 'video_features', f'{prefix}{vid}_{name}.npy'), feats)
  with open(os.path.join(root, activitynet.ANNOTATION), 'w') as f:
    json.dump({'version': 'VERSION 1.3', 'taxonomy': taxonomy(), 'database': db}, f)
  return root, db


def test_categories_come_from_the_tree():
  anno = {'taxonomy': taxonomy(), 'database': {}}
  assert activitynet.categories(anno) == list(TOP)
  level = activitynet.first_level(anno['taxonomy'], 'x')
  assert level['Surfing'] == 'Sports, Exercise, and Recreation' and level['Shaving group'] == 'Personal Care'
  entry = {'annotations': [{'segment': [0, 1], 'label': 'Surfing'},
                           {'segment': [2, 3], 'label': 'Mopping floor'}]}
  assert activitynet.video_categories(entry, level) == {'Sports, Exercise, and Recreation',
                                                       'Household Activities'}
  assert activitynet.resolve_category('sport', list(TOP)) == 'Sports, Exercise, and Recreation'
  assert activitynet.resolve_category('s', list(TOP)) is None  # two categories start with s


def test_coverage_labels_by_hand():
  level = activitynet.first_level(taxonomy(), 'x')
  entry = {'annotations': [{'segment': [1.6, 8.0], 'label': 'Surfing'},
                           {'segment': [7.0, 9.6], 'label': 'Long jump'},
                           {'segment': [0.0, 3.2], 'label': 'Shaving'}]}
  sport = 'Sports, Exercise, and Recreation'
  # Segments of 3.2 s: [0, 3.2) [3.2, 6.4) [6.4, 9.6) [9.6, 12.8).
  # Surfing covers 1.6/3.2, 3.2/3.2, 1.6/3.2, 0; Long jump 0, 0, 2.6/3.2, 0 -> max per segment.
  got = activitynet.segment_labels(entry, sport, level, 4, 3.2)
  np.testing.assert_allclose(got, [0.5, 1.0, 2.6 / 3.2, 0.0], rtol=1e-6)
  # Published: the last event wins where it touches, int(coverage): 1 inside, 0 partial, -1 out.
  pub = activitynet.segment_labels(entry, sport, level, 4, 3.2, 'published')
  np.testing.assert_array_equal(pub, [0, 1, 0, -1])
  np.testing.assert_allclose(activitynet.segment_labels(entry, 'Personal Care', level, 4, 3.2),
                             [1, 0, 0, 0])


def test_load_and_run(tmp_path):
  import launch  # pylint: disable=import-outside-toplevel
  root, db = write_activitynet(str(tmp_path / 'anet'))
  cfg = ml_collections.ConfigDict(dict(name='activitynet', root=root, source_category='sport',
                                       target_category='household', features='rgb+opt',
                                       split='umt', split_seed=42, val_fraction=0.0,
                                       clip_seconds=-1.0, activitynet_label_rule='spec'))
  data = datasets.get('activitynet').load(cfg)
  level = activitynet.first_level(taxonomy(), 'x')
  want_test = sorted(v for v, e in db.items() if e['subset'] == 'validation'
                     and 'Household Activities' in activitynet.video_categories(e, level))
  assert [v.vid for v in data.target_test] == want_test and data.feature_dim == 16
  assert all(v.category == 'Sports, Exercise, and Recreation' for v in data.source_train)
  assert all(v.labels.min() >= 0 and v.labels.max() <= 1 for v in data.target_test)
  with pytest.raises(UserInputError, match='not a first-level ActivityNet category'):
    datasets.get('activitynet').load(ml_collections.ConfigDict({**cfg, 'target_category': 'cooking'}))
  with pytest.raises(UserInputError, match='drop --config.data.split=kfold'):
    datasets.get('activitynet').load(ml_collections.ConfigDict({**cfg, 'split': 'kfold'}))
  wd = tmp_path / 'wd'
  argv = ['launch.py', '--noprogress', '--config=configs/youtube_surfing.py', f'--workdir={wd}',
          '--config.data.name=activitynet', f'--config.data.root={root}',
          '--config.data.source_category=sport', '--config.data.target_category=household',
          '--config.activitynet.label_rule=published', *tiny_overrides(**{'train.num_steps': 10})]
  assert launch.main(argv) == 0
  res = json.loads((wd / 'results.json').read_text())
  assert res['metric'] == 'map' and 0 <= res['map'] <= 1 and res['num_test_videos'] == len(want_test)
