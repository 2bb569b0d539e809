"""C3D in Flax: parity with a PyTorch C3D built from SPEC, weight conversion and files."""
import numpy as np
import pytest

from dlvhd_jax import c3d
from tools import convert_c3d

# features.N index -> SPEC layer name (the Sports-1M c3d.pickle layout)
_NAMED = {'features.0': 'conv1', 'features.3': 'conv2', 'features.6': 'conv3a',
          'features.8': 'conv3b', 'features.11': 'conv4a', 'features.13': 'conv4b',
          'features.16': 'conv5a', 'features.18': 'conv5b', 'classifier.0': 'fc6',
          'classifier.3': 'fc7', 'classifier.6': 'fc8'}


def _torch_c3d(torch):
  """SPEC's C3D as nn.Sequential (the c3d-pretrained.pth key layout), N(0, 1/fan_in) init so
  activations keep the input's scale."""
  nn = torch.nn

  def conv(cin, cout):
    return nn.Conv3d(cin, cout, kernel_size=3, padding=1)

  class TorchC3D(nn.Module):

    def __init__(self):
      super().__init__()
      pool = lambda: nn.MaxPool3d(2, 2)
      self.features = nn.Sequential(
          conv(3, 64), nn.ReLU(), nn.MaxPool3d((1, 2, 2), (1, 2, 2)),
          conv(64, 128), nn.ReLU(), pool(),
          conv(128, 256), nn.ReLU(), conv(256, 256), nn.ReLU(), pool(),
          conv(256, 512), nn.ReLU(), conv(512, 512), nn.ReLU(), pool(),
          conv(512, 512), nn.ReLU(), conv(512, 512), nn.ReLU(),
          nn.MaxPool3d(2, 2, padding=(0, 1, 1)))
      self.classifier = nn.Sequential(
          nn.Linear(8192, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
          nn.Dropout(), nn.Linear(4096, 487))

    def forward(self, x):
      pool5 = self.features(x)
      fc6 = self.classifier[0](pool5.flatten(1))  # PyTorch flattens [C, T, H, W]
      fc7 = self.classifier[3](torch.relu(fc6))
      return pool5, fc6, fc7

  torch.manual_seed(0)
  model = TorchC3D().eval()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.Conv3d, nn.Linear)):
        fan_in = m.weight[0].numel()
        m.weight.normal_(0.0, fan_in ** -0.5)
        m.bias.uniform_(-0.1, 0.1)
  return model


@pytest.fixture(scope='module')
def torch_reference():
  torch = pytest.importorskip('torch')
  model = _torch_c3d(torch)
  clip = np.random.default_rng(0).uniform(-102, 165, (1, 16, 112, 112, 3)).astype(np.float32)
  with torch.no_grad():
    pool5, fc6, fc7 = model(torch.from_numpy(clip.transpose(0, 4, 1, 2, 3).copy()))
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  return {'torch': torch, 'sd': sd, 'clip': clip, 'pool5': pool5.numpy(),
          'fc6': fc6.numpy(), 'fc7': fc7.numpy()}


def _named_layout(sd):
  return {_NAMED[k.rsplit('.', 1)[0]] + '.' + k.rsplit('.', 1)[1]: v for k, v in sd.items()}


def _assert_close(got, want):
  # float32 tolerance: both sides accumulate 8 convolutions in different orders
  scale = float(np.abs(want).max())
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize('layout', ['features', 'named'])
def test_parity_with_pytorch(torch_reference, layout):
  ref = torch_reference
  sd = ref['sd'] if layout == 'features' else _named_layout(ref['sd'])
  assert ('features.0.weight' in sd) == (layout == 'features')
  params = c3d.convert_torch_state_dict(sd)
  out = c3d.extract_features(params, ref['clip'], outputs=('pool5', 'fc6', 'fc7'))
  assert out['fc7'].shape == (1, 4096) and out['pool5'].shape == (1, 1, 4, 4, 512)
  _assert_close(np.asarray(out['pool5']), ref['pool5'].transpose(0, 2, 3, 4, 1))
  _assert_close(np.asarray(out['fc6']), ref['fc6'])
  _assert_close(np.asarray(c3d.extract_fc7(params, ref['clip'])), ref['fc7'])


def test_bfloat16_close_to_float32(torch_reference):
  params = c3d.convert_torch_state_dict(torch_reference['sd'])
  got = np.asarray(c3d.extract_fc7(params, torch_reference['clip'], dtype='bfloat16'))
  want = torch_reference['fc7']
  assert got.dtype == np.float32
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05


def test_converter_cli_roundtrip(torch_reference, tmp_path):
  torch = torch_reference['torch']
  # DataParallel checkpoints prefix every key with `module.`; fc8 is dropped.
  wrapped = {'module.' + k: torch.from_numpy(v) for k, v in
             _named_layout(torch_reference['sd']).items()}
  torch.save(wrapped, tmp_path / 'c3d.pickle')
  out = tmp_path / 'c3d_params.npz'
  assert convert_c3d.main(['--input', str(tmp_path / 'c3d.pickle'), '--output', str(out)]) == 0
  loaded = c3d.load_params(str(out))
  direct = c3d.convert_torch_state_dict(torch_reference['sd'])
  for layer, kinds in direct['params'].items():
    for kind, value in kinds.items():
      np.testing.assert_array_equal(loaded['params'][layer][kind], value)


def test_converter_cli_reports_bad_file(tmp_path, capsys):
  torch = pytest.importorskip('torch')
  torch.save({'conv1.weight': torch.zeros(64, 3, 3, 3, 3)}, tmp_path / 'bad.pth')
  assert convert_c3d.main(['--input', str(tmp_path / 'bad.pth'),
                           '--output', str(tmp_path / 'x.npz')]) == 1
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and 'missing keys' in err and 'conv1.bias' in err


def _fake_state_dict():
  sd = {}
  for layer, kinds in c3d.param_shapes().items():
    sd[f'{layer}.weight'] = np.zeros(c3d._torch_shape(layer, 'kernel'), np.float32)
    sd[f'{layer}.bias'] = np.zeros(kinds['bias'], np.float32)
  return sd


@pytest.mark.parametrize('edit, message', [
    (lambda sd: sd.pop('fc7.bias'), "missing keys ['fc7.bias']"),
    (lambda sd: sd.update({'conv6.weight': np.zeros(1)}), "unexpected keys ['conv6.weight']"),
    (lambda sd: sd.update({'conv2.weight': np.zeros((128, 64, 3, 3, 1))}), 'conv2.weight'),
])
def test_conversion_errors_are_one_line(edit, message):
  sd = _fake_state_dict()
  edit(sd)
  with pytest.raises(ValueError) as info:
    c3d.convert_torch_state_dict(sd)
  assert message in str(info.value) and '\n' not in str(info.value)


def test_ignored_head_keys_and_prefix():
  sd = {'module.' + k: v for k, v in _fake_state_dict().items()}
  sd['module.fc8.weight'] = np.zeros((487, 4096), np.float32)
  params = c3d.convert_torch_state_dict(sd)
  assert params['params']['conv1']['kernel'].shape == (3, 3, 3, 3, 64)
  assert params['params']['fc6']['kernel'].shape == (8192, 4096)


def test_fc6_rows_follow_flax_flatten_order():
  sd = _fake_state_dict()
  w = np.zeros((4096, 8192), np.float32)
  c, t, h, wi = 5, 0, 2, 3  # torch input index of pool5[c, t, h, w]
  w[7, c * 16 + t * 16 + h * 4 + wi] = 1.0
  sd['fc6.weight'] = w
  kernel = c3d.convert_torch_state_dict(sd)['params']['fc6']['kernel']
  assert kernel[((t * 4 + h) * 4 + wi) * 512 + c, 7] == 1.0 and kernel.sum() == 1.0


def test_params_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    c3d.load_params(str(tmp_path / 'none.npz'))
  (tmp_path / 'junk.npz').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='junk.npz'):
    c3d.load_params(str(tmp_path / 'junk.npz'))
  np.savez(tmp_path / 'partial.npz', **{'conv1/kernel': np.zeros((3, 3, 3, 3, 64))})
  with pytest.raises(ValueError, match='conv1/bias missing'):
    c3d.load_params(str(tmp_path / 'partial.npz'))


def test_flops_and_random_params():
  assert c3d.flops_per_clip() == 2 * 38_546_964_480
  params = c3d.init_random_params(3)
  assert params['params']['conv5b']['kernel'].shape == (3, 3, 3, 512, 512)
  assert params['params']['fc7']['kernel'].dtype == np.float32
  np.testing.assert_array_equal(params['params']['conv1']['kernel'],
                                c3d.init_random_params(3)['params']['conv1']['kernel'])
  with pytest.raises(ValueError, match='dtype'):
    c3d.extract_fc7(params, np.zeros((1, 16, 112, 112, 3), np.float32), dtype='float16')
