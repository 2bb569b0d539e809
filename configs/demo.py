"""The embedded default: DL-VHD vs the source-only SL-module on synthetic cross-category data.

The dataset (4 categories, 40 videos each, 64-d features in the UMT layout) is written into
<workdir>/data on first use. Both methods train and evaluate in a couple of minutes on a
2-core CPU; results land in <workdir>/{dlvhd,sl}/results.json and <workdir>/results.json.
"""
from configs import base


def get_config():
  c = base.get_base_config()
  c.name = 'demo'
  c.method = 'dlvhd'
  c.compare_methods = ('dlvhd', 'sl')
  c.data.name = 'synthetic'
  c.data.synthetic_seed = 0
  c.data.source_category = 'diving'
  c.data.target_category = 'climbing'
  c.model.width = 64
  c.model.depth = 2
  c.model.num_heads = 4
  c.model.dropout = 0.1
  c.train.batch_size = 32
  c.train.num_steps = 600
  # KL between set softmaxes of scores in (-1, 1) has small gradients; with 32 sets per
  # step a large SGD learning rate trains in a few hundred steps.
  c.train.learning_rate = 0.5
  c.train.steps_per_dispatch = 10
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 200
  return c
